"""AWD-LSTM language model: fastlight (`python train.py task=lm`) against fastai's
`language_model_learner(AWD_LSTM, pretrained=False)`, same data, model, recipe, in one process.

    python tests/benchmarks/bench_lm.py                     # 1 epoch each on ptb.valid.txt, test on ptb.test.txt
    python tests/benchmarks/bench_lm.py --epochs 3
    python tests/benchmarks/bench_lm.py --max-batches 6     # speed only, a few batches (busy machine)
    python tests/benchmarks/bench_lm.py --precision bf16    # bf16 autocast for both peers (avx512_bf16 CPUs)
    python tests/benchmarks/bench_lm.py --precision bf16 --fastai-precision 32   # each at its best CPU setting
    python tests/benchmarks/bench_lm.py --seeds 5           # seeds 0-4: medians, and the paired perplexity gap

Both train on the same numericalized stream (fastlight's PTB reader, `data.train=valid`), batch
size 32, bptt 70, fastai's awd_lstm_lm_config (400/1152/3) with drop_mult, AR 2 / TAR 1, Adam
(wd 0.01, moms 0.8/0.7/0.8) one-cycle at lr 2e-3, gradients clipped at 0.25 (fastai: GradientClip),
denormals flushed, the same torch threads. Reported: training tokens per second (training batches
only, validation excluded) and ptb.test.txt perplexity, both peers scored by the same function
(exp of the mean cross-entropy over every test token, state carried through the test stream).

Throughput is given twice: over whole training epochs, and as the median over training batches
(each batch timed from its start to the end of its optimizer step, data loading excluded, the
same span for both peers). The median is the steadier one on a shared machine: two threads on
two cores lose several times their speed for as long as any other process runs, so a single
epoch's mean mostly measures the neighbours (this turn's 260 vs 256 tokens/s).
`--precision bf16`: fastlight runs `trainer.precision=bf16-mixed`; fastai, whose MixedPrecision
callback is CUDA-only, gets the same `torch.autocast("cpu", torch.bfloat16)` around its forward
and loss (a callback here), so the two peers still compare the same precision.
`--fastai-precision 32` leaves fastai at fp32, what fastai itself offers on a CPU: fastlight's
bf16-mixed against fastai as a fastai user can run it (perplexity says what the precision costs).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import ClassVar

import common
import lightning as L
import torch
import torch.nn.functional as F


class BatchTimer(L.Callback):
    """fastlight's per-batch timer (added with `+callbacks.batch_timer`); seconds on the class."""

    seconds: ClassVar[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        BatchTimer.seconds.append(time.perf_counter() - self._start)


def fastai_batch_timer():
    """The same span on fastai's side: before_batch -> after_batch (after its optimizer step)."""
    from fastai.callback.core import Callback

    class FastaiBatchTimer(Callback):
        order = -50  # first in, so the clock includes every other callback's work

        def __init__(self):
            self.seconds: list[float] = []

        def before_batch(self):
            self._start = time.perf_counter()

        def after_batch(self):
            if self.training:
                self.seconds.append(time.perf_counter() - self._start)

    return FastaiBatchTimer()


@torch.no_grad()
def stream_perplexity(model, batches) -> float:
    """exp(mean next-token cross-entropy) over `batches`, the state carried from batch to batch."""
    model.eval()
    model.reset()
    total, n = 0.0, 0
    for x, y in batches:
        logits = model(x)[0]
        total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"))
        n += y.numel()
    model.reset()
    return math.exp(total / n)


def ptb_data(root, bs: int, bptt: int):
    from fastlight.data.text.lm import PTB

    # data=ptb's settings (min_freq 1: PTB is already cut to its vocabulary), so both peers read the same ids
    dm = PTB(root=str(root), train="valid", download=False, batch_size=bs, bptt=bptt, n_workers=1, min_freq=1)
    dm.setup("fit")
    return dm


def run_fastlight(args, root, seed: int) -> dict:
    overrides = ["task=lm", f"seed={seed}", "data=ptb", "data.train=valid", f"data.root={root}",
                 f"data.batch_size={args.bs}",
                 f"data.bptt={args.bptt}", "data.n_workers=1", f"model.drop_mult={args.drop_mult}",
                 f"optim.lr={args.lr}", f"trainer.max_epochs={args.epochs}", f"torch_threads={args.threads}",
                 "logger=csv", "callbacks.progress_bar.refresh_rate=0", "trainer.num_sanity_val_steps=0",
                 *common.timer_overrides("train"), f"+callbacks.batch_timer._target_={BatchTimer.__module__}.BatchTimer"]
    if args.precision == "bf16":
        overrides.append("trainer.precision=bf16-mixed")
    if args.max_batches:
        overrides += [f"trainer.limit_train_batches={args.max_batches}", f"trainer.limit_val_batches={args.max_batches}",
                      f"trainer.limit_test_batches={args.max_batches}"]
    BatchTimer.seconds = []
    summary, run_dir = common.run_fastlight(overrides, prefix="bench_lm_", quiet=True)
    if summary["status"] != "completed":
        raise SystemExit(f"fastlight run failed: {summary['error']}")
    epochs = common.EpochTimer.epochs
    return {"epochs": epochs, "batches": list(BatchTimer.seconds), "test_ppl": summary["metrics"].get("test/perplexity"),
            "run_dir": run_dir}


def run_fastai(args, dm) -> dict:
    from fastai.callback.training import GradientClip, ShortEpochCallback
    from fastai.text.all import (
        AWD_LSTM,
        DataLoaders,
        LMDataLoader,
        accuracy,
        language_model_learner,
    )

    ids, _ = dm.splits["train"]
    train = LMDataLoader([ids], bs=args.bs, seq_len=args.bptt, shuffle=True)
    valid = LMDataLoader([dm.splits["valid"][0]], bs=args.bs, seq_len=args.bptt)
    dls = DataLoaders(train, valid, device="cpu")
    dls.vocab = dm.vocab
    learn = language_model_learner(dls, AWD_LSTM, drop_mult=args.drop_mult, pretrained=False, metrics=[accuracy])
    timer, batches = common.fastai_timer("train"), fastai_batch_timer()
    cbs = [timer, batches, GradientClip(0.25)]
    if common.fastai_bf16(args):
        cbs.append(common.fastai_cpu_autocast())
    if args.max_batches:
        cbs.append(ShortEpochCallback(pct=args.max_batches / len(train), short_valid=True))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(args.epochs, args.lr, cbs=cbs)
    test = dm.test_dataloader()
    if args.max_batches:
        test = [b for _, b in zip(range(args.max_batches), test)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=common.fastai_bf16(args)):
        ppl = stream_perplexity(learn.model, test)  # scored as fastlight's bf16 run tests: under autocast
    return {"epochs": timer.epochs, "batches": batches.seconds, "test_ppl": ppl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=0, help="train/score only this many batches (speed only)")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--drop-mult", type=float, default=1.0, help="fastai's language_model_learner default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="repeat with seeds 0..N-1, the peers interleaved")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"], help="bf16: autocast for both peers")
    parser.add_argument("--fastai-precision", choices=["32", "bf16"], help="fastai's own (default: --precision)")
    parser.add_argument("--data", help="data root (default: $FASTLIGHT_DATA or ../shared/data)")
    parser.add_argument("--no-fastai", action="store_true")
    args = parser.parse_args()
    common.prepare_process()
    torch.set_num_threads(args.threads)
    root = common.data_root(args.data)
    dm = ptb_data(root, args.bs, args.bptt)
    tokens = sum(x.numel() for _, (x, _) in zip(range(args.max_batches or 10**9), dm.train_dataloader()))
    print(f"ptb.valid.txt: {dm.stats['train_tokens']} tokens, vocab {len(dm.vocab)}; {tokens} training tokens "
          f"per epoch; bs {args.bs}, bptt {args.bptt}, drop_mult {args.drop_mult}, {args.threads} threads, "
          f"precision {args.precision} (fastai {args.fastai_precision or args.precision})",
          file=sys.stderr)
    fastai = common.import_fastai("fastai.text.all", not args.no_fastai)
    peers = ["fastlight"] + (["fastai"] if fastai is not None else [])

    def run(peer: str, seed: int) -> dict:
        torch.manual_seed(seed)
        t = time.perf_counter()
        result = run_fastlight(args, root, seed) if peer == "fastlight" else run_fastai(args, dm)
        return {**result, "wall": time.perf_counter() - t}

    def describe(r: dict) -> str:
        per_batch = args.bs * args.bptt / common.median(r["batches"])
        return (f"{[round(tokens / x.wall) for x in r['epochs']]} tokens/s per epoch, {per_batch:.0f} per batch "
                f"(median of {len(r['batches'])}), test ppl {r['test_ppl']:.1f}, {r['wall']:.0f} s in all")

    runs = common.interleaved(peers, args.seeds, run, describe, threads=args.threads)
    speed = {p: common.median(tokens / e.wall for r in runs[p] for e in r["epochs"]) for p in peers}
    cpu = {p: common.median(tokens / e.cpu for r in runs[p] for e in r["epochs"]) for p in peers}
    batch = {p: args.bs * args.bptt / common.median(s for r in runs[p] for s in r["batches"]) for p in peers}
    ppl = {p: common.median(r["test_ppl"] for r in runs[p]) for p in peers}
    print(common.peers_table(peers, [
        common.Column("tokens/s (batch median)", batch, ".0f", ("fastai",)),
        common.Column("train tokens/s (epoch)", speed, ".0f", ("fastai",)),
        common.Column("tokens/CPU-s", cpu, ".0f", ("fastai",)),
        common.Column(f"ptb.test ppl ({args.epochs} ep{', partial' if args.max_batches else ''})", ppl, ".1f"),
    ]))
    if args.seeds > 2 and len(peers) == 2:
        print(common.seed_report("ptb.test ppl", {p: [r["test_ppl"] for r in runs[p]] for p in peers}, ".1f"))


if __name__ == "__main__":
    main()
