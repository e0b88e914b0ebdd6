"""One LSTM layer, forward and backward: `nn.LSTM` at fp32 (oneDNN), `nn.LSTM` under CPU bf16 autocast
(oneDNN's bf16 RNN), and fastlight's `bf16_lstm`, which the AWD-LSTM trains through under bf16 autocast.

    python tests/benchmarks/bench_lstm.py                          # AWD-LSTM's middle layer: 1152 -> 1152
    python tests/benchmarks/bench_lstm.py --n-in 400 --hid 1152    # its first layer

Batch 32, 70 steps (bench_lm's), fp32 master weights, denormals flushed; the loss reaches the output
sequence. Medians over interleaved repeats. Error: relative to an fp64 nn.LSTM on the same inputs,
over the output and every gradient (the worst one).
"""

from __future__ import annotations

import argparse
import time

import common
import torch
from torch import nn

from fastlight.models.bf16_lstm import bf16_lstm

PEERS = ("nn.LSTM fp32", "nn.LSTM bf16", "bf16_lstm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-in", type=int, default=1152)
    parser.add_argument("--hid", type=int, default=1152)
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    common.prepare_process()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lstm = nn.LSTM(args.n_in, args.hid, batch_first=True)
    x = torch.randn(args.bs, args.steps, args.n_in, requires_grad=True)
    hx = tuple(0.5 * torch.randn(1, args.bs, args.hid) for _ in range(2))
    w_out = torch.randn(args.bs, args.steps, args.hid)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]

    def forward(peer: str):
        with torch.autocast("cpu", torch.bfloat16, enabled=peer != "nn.LSTM fp32"):
            return bf16_lstm(x, hx, *weights)[0] if peer == "bf16_lstm" else lstm(x, hx)[0]

    def grads(peer: str) -> list[torch.Tensor]:
        out = forward(peer).float()
        return [out.detach(), *torch.autograd.grad((out * w_out).sum(), [x, *weights])]

    ref = nn.LSTM(args.n_in, args.hid, batch_first=True).double()
    ref.load_state_dict(lstm.state_dict())
    xd = x.detach().double().requires_grad_()
    out = ref(xd, tuple(h.double() for h in hx))[0]
    expected = [out, *torch.autograd.grad((out * w_out.double()).sum(), [xd, *ref.parameters()])]
    error = {p: max(float((g.double() - e).norm() / e.norm()) for g, e in zip(grads(p), expected)) for p in PEERS}

    def run(peer: str, _repeat: int) -> tuple[float, float]:
        start = time.perf_counter()
        out = forward(peer)
        mid = time.perf_counter()
        torch.autograd.grad((out.float() * w_out).sum(), [x, *weights])
        return mid - start, time.perf_counter() - mid

    for peer in PEERS:
        run(peer, -1)  # warm-up: oneDNN builds its primitives on the first call
    results = common.interleaved(PEERS, args.repeats, run)
    fwd = {p: 1e3 * common.median(f for f, _ in results[p]) for p in PEERS}
    bwd = {p: 1e3 * common.median(b for _, b in results[p]) for p in PEERS}
    speed = {p: 1e3 / (fwd[p] + bwd[p]) for p in PEERS}
    print(f"LSTM {args.n_in} -> {args.hid}, batch {args.bs}, {args.steps} steps, {args.threads} threads")
    print(common.peers_table(list(PEERS), [
        common.Column("forward ms", fwd, ".0f"),
        common.Column("backward ms", bwd, ".0f"),
        common.Column("layers/s (fwd + bwd)", speed, ".2f", ("nn.LSTM fp32",)),
        common.Column("error vs fp64", error, ".4f"),
    ]))


if __name__ == "__main__":
    main()
