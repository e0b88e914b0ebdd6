"""One LSTM layer for training under bf16 autocast on a CPU: its matrix products in bf16, its cell in fp32.

Why: under `torch.autocast("cpu", torch.bfloat16)` `nn.LSTM` runs oneDNN's bf16 RNN, whose forward is
twice as fast as its fp32 one but whose backward is slower, so a bf16 AWD-LSTM trained no faster than
an fp32 one. Written out, the backward is mostly three large products over the whole sequence (the
gradients of both weight matrices and of the input), which bf16 runs at several times fp32's rate on
CPUs with bf16 instructions, plus one small product per step. `tests/benchmarks/bench_lstm.py`, one
1152-unit layer, batch 32, 70 steps, 2 threads (forward + backward ms): nn.LSTM fp32 117 + 233,
nn.LSTM bf16 55 + 251, this layer 71 + 181 (1.39x fp32). Only the products' operands are rounded to
bf16 (as autocast does); the gates, the cell state and every sum of gradients over time stay fp32, so
it is a little closer to fp64 than oneDNN's bf16 cell (worst relative error 0.0041 against 0.0050).

It also trains better: `nn.LSTM` under autocast keeps its hidden and cell states in bf16.
A 128/384 AWD-LSTM trained from scratch on imdb_sample (4 epochs, lr 1e-2, fp32 decoder) reached
validation perplexity 227 and 202 (seeds 1 and 42) through oneDNN's bf16 cell, 177 and 143 through
this layer, 158 and 154 at fp32. So it runs every LSTM trained under CPU bf16 autocast, although for
narrow layers oneDNN's bf16 RNN is the faster: at 384 units (72 steps) it is 1.46x fp32 and this layer
0.99x, because there each step's dozen small calls cost as much as its arithmetic.

The layer is PyTorch's (gates in the order input, forget, cell, output; both biases), so it is a drop-in
for a one-layer, batch-first `nn.LSTM` given that LSTM's weights. `WeightDropout` uses it where
`use_bf16_lstm` says so; evaluation keeps `nn.LSTM`, whose bf16 forward alone is the faster one.
"""

from __future__ import annotations

import torch
from torch import nn

BF16 = torch.bfloat16


def bf16_autocast(device: str) -> bool:
    """True inside `torch.autocast(device, torch.bfloat16)`."""
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == BF16


def use_bf16_lstm(module: nn.Module, x: torch.Tensor) -> bool:
    """True for a one-layer batch-first `nn.LSTM` that is about to be trained under CPU bf16 autocast."""
    return (x.device.type == "cpu" and bf16_autocast("cpu") and torch.is_grad_enabled()
            and isinstance(module, nn.LSTM) and module.num_layers == 1 and module.batch_first
            and module.bias and not module.bidirectional and module.proj_size == 0
            and (x.requires_grad or any(p.requires_grad for p in module.parameters())))


def bf16_lstm(x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None, w_ih: torch.Tensor,
              w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor):
    """`nn.LSTM(batch_first=True)(x, hx)` with these weights: (output (bs, T, H), (h, c) each (1, bs, H)), fp32."""
    if hx is None:
        hx = (x.new_zeros(1, x.size(0), w_hh.size(1), dtype=torch.float32),) * 2
    h0, c0 = hx
    with torch.autocast("cpu", enabled=False):
        out, h, c = BF16LSTMFunction.apply(x.float(), h0[0].float(), c0[0].float(), w_ih, w_hh, b_ih, b_hh)
    return out, (h.unsqueeze(0), c.unsqueeze(0))


def _scaled_cell_rows(w: torch.Tensor, k: float) -> torch.Tensor:
    """A copy with the cell gate's rows times k (2 or 1/2: exact in any precision). The forward runs on
    doubled cell rows: tanh(z) = 2 sigmoid(2z) - 1, and one sigmoid over all four gates costs less than
    a sigmoid over three and a tanh over the fourth."""
    hid = w.size(0) // 4
    w = w.clone()
    w[2 * hid: 3 * hid] *= k
    return w


def _tanh_(z: torch.Tensor) -> torch.Tensor:
    """tanh in place of sigmoid(2z) (absolute error 2e-7): PyTorch's CPU tanh costs 5x its sigmoid."""
    return z.sigmoid_().mul_(2).sub_(1)


class BF16LSTMFunction(torch.autograd.Function):
    """Forward and backward of one LSTM layer, feature-major inside: every per-step tensor is (features,
    batch), so each step's product is weight @ state, which bf16 GEMMs run 1.3-1.6x faster at batch 32
    than state @ weight.T, and each gate is a block of whole rows.

    Stored: gates (4H, T, bs), cell states (H, T + 1, bs), tanh(c) and h (H, T, bs).
    """

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        bs, steps, _ = x.shape
        hid = w_hh.size(1)
        wi, wh = _scaled_cell_rows(w_ih, 2).to(BF16), _scaled_cell_rows(w_hh, 2).to(BF16)
        xs = x.transpose(0, 1).to(BF16).contiguous()  # (T, bs, in)
        # The input's share of every gate at every step: one large product, (4H, T * bs).
        gates = torch.mm(wi, xs.view(steps * bs, -1).t()).float().view(4 * hid, steps, bs)
        gates.add_(_scaled_cell_rows(b_ih + b_hh, 2)[:, None, None])
        cs = x.new_empty(hid, steps + 1, bs)  # cs[:, t + 1] is the cell after step t; cs[:, 0] = c0
        tanh_cs = x.new_empty(hid, steps, bs)
        hs = x.new_empty(hid, steps, bs)
        h_prev = xs.new_empty(hid, steps, bs)  # the bf16 copy each step multiplies; dW_hh's operand
        cs[:, 0] = c0.t()
        h_prev[:, 0] = h0.t()
        for t in range(steps):
            g = gates[:, t].add_(torch.mm(wh, h_prev[:, t]))  # now the gates' pre-activations, then activations
            g.sigmoid_()
            i, f, cell, o = g.chunk(4, 0)
            cell.mul_(2).sub_(1)  # 2 sigmoid(2z) - 1 = tanh(z)
            c = torch.mul(f, cs[:, t], out=cs[:, t + 1]).addcmul_(i, cell)
            h = torch.mul(o, _tanh_(torch.mul(c, 2, out=tanh_cs[:, t])), out=hs[:, t])
            if t + 1 < steps:
                h_prev[:, t + 1] = h
        ctx.save_for_backward(xs, wi, wh, gates, cs, tanh_cs, h_prev)
        return hs.permute(2, 1, 0), h.t().contiguous(), c.t().contiguous()

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        xs, wi, wh, gates, cs, tanh_cs, h_prev = ctx.saved_tensors
        four_hid, steps, bs = gates.shape
        hid = four_hid // 4
        i, f, cell, o = gates.chunk(4, 0)
        # Everything that depends on the forward alone, for all steps at once, so that each step of the
        # loop below is a few fused multiplies and one product:
        #   d gate_i = dc * cell * i(1-i),  d gate_f = dc * c_prev * f(1-f),  d gate_cell = dc * i (1-cell^2),
        #   d gate_o = dh * tanh(c) * o(1-o),  and dc gains dh * o (1 - tanh(c)^2).
        by_dc = torch.stack([cell * i * (1 - i), cs[:, :-1] * f * (1 - f), i * (1 - cell * cell)], 0)
        by_dh = tanh_cs * o * (1 - o)
        dc_from_dh = o * (1 - tanh_cs * tanh_cs)
        d_out = d_out.permute(2, 1, 0).contiguous()  # (H, T, bs)
        # The saved weights' cell rows are doubled; gradients are taken with respect to the true ones.
        wi = _scaled_cell_rows(wi, 0.5)
        wh_t = _scaled_cell_rows(wh, 0.5).t().contiguous()  # (H, 4H): weight @ state, as in the forward
        d_gates = torch.empty_like(gates)
        d_gates_bf16 = torch.empty_like(gates, dtype=BF16)  # the operand of this step's and the final products
        dh, dc = d_h.t().contiguous(), d_c.t().contiguous()
        for t in reversed(range(steps)):
            dh = dh.add_(d_out[:, t])
            dc = dc.addcmul_(dh, dc_from_dh[:, t])
            d = d_gates[:, t]
            torch.mul(dc, by_dc[:, :, t], out=d[: 3 * hid].view(3, hid, bs))
            torch.mul(dh, by_dh[:, t], out=d[3 * hid:])
            dc = dc.mul_(f[:, t])
            d_bf16 = d_gates_bf16[:, t]
            d_bf16.copy_(d)
            dh = torch.mm(wh_t, d_bf16).float()
        d_flat = d_gates_bf16.view(four_hid, steps * bs)
        d_x = d_w_ih = d_w_hh = d_b_ih = d_b_hh = None
        if ctx.needs_input_grad[0]:
            d_x = torch.mm(d_flat.t(), wi).float().view(steps, bs, -1).transpose(0, 1)
        if ctx.needs_input_grad[3]:
            d_w_ih = torch.mm(d_flat, xs.view(steps * bs, -1)).float()
        if ctx.needs_input_grad[4]:
            d_w_hh = torch.mm(d_flat, h_prev.view(hid, steps * bs).t()).float()
        if ctx.needs_input_grad[5] or ctx.needs_input_grad[6]:
            d_b = d_gates.sum((1, 2))
            d_b_ih, d_b_hh = d_b, d_b.clone()  # two tensors: each bias's .grad must be its own
        return d_x, dh.t().contiguous(), dc.t().contiguous(), d_w_ih, d_w_hh, d_b_ih, d_b_hh
