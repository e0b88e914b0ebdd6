"""AWD-LSTM language model: fastlight (`python train.py task=lm`) against fastai's
`language_model_learner(AWD_LSTM, pretrained=False)`, same data, model, recipe, in one process.

    python tests/benchmarks/bench_lm.py                     # 1 epoch each on ptb.valid.txt, test on ptb.test.txt
    python tests/benchmarks/bench_lm.py --epochs 3
    python tests/benchmarks/bench_lm.py --max-batches 6     # speed only, a few batches (busy machine)

Both train on the same numericalized stream (fastlight's PTB reader, `data.train=valid`), batch
size 32, bptt 70, fastai's awd_lstm_lm_config (400/1152/3) with drop_mult, AR 2 / TAR 1, Adam
(wd 0.01, moms 0.8/0.7/0.8) one-cycle at lr 2e-3, gradients clipped at 0.25 (fastai: GradientClip),
denormals flushed, the same torch threads. Reported: training tokens per second (training batches
only, validation excluded) and ptb.test.txt perplexity, both peers scored by the same function
(exp of the mean cross-entropy over every test token, state carried through the test stream).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import common
import torch
import torch.nn.functional as F


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


def run_fastlight(args, root) -> dict:
    overrides = ["task=lm", "data=ptb", "data.train=valid", f"data.root={root}", f"data.batch_size={args.bs}",
                 f"data.bptt={args.bptt}", "data.n_workers=1", f"model.drop_mult={args.drop_mult}",
                 f"optim.lr={args.lr}", f"trainer.max_epochs={args.epochs}", f"torch_threads={args.threads}",
                 "logger=csv", "callbacks.progress_bar.refresh_rate=0", "trainer.num_sanity_val_steps=0",
                 *common.timer_overrides("train")]
    if args.max_batches:
        overrides += [f"trainer.limit_train_batches={args.max_batches}", f"trainer.limit_val_batches={args.max_batches}",
                      f"trainer.limit_test_batches={args.max_batches}"]
    summary, run_dir = common.run_fastlight(overrides, prefix="bench_lm_", quiet=True)
    if summary["status"] != "completed":
        raise SystemExit(f"fastlight run failed: {summary['error']}")
    epochs = common.EpochTimer.epochs
    return {"epochs": epochs, "test_ppl": summary["metrics"].get("test/perplexity"), "run_dir": run_dir}


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
    timer = common.fastai_timer("train")
    cbs = [timer, GradientClip(0.25)]
    if args.max_batches:
        cbs.append(ShortEpochCallback(pct=args.max_batches / len(train), short_valid=True))
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(args.epochs, args.lr, cbs=cbs)
    test = dm.test_dataloader()
    if args.max_batches:
        test = [b for _, b in zip(range(args.max_batches), test)]
    return {"epochs": timer.epochs, "test_ppl": stream_perplexity(learn.model, test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-batches", type=int, default=0, help="train/score only this many batches (speed only)")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=70)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--drop-mult", type=float, default=1.0, help="fastai's language_model_learner default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="data root (default: $FASTLIGHT_DATA or ../shared/data)")
    parser.add_argument("--no-fastai", action="store_true")
    args = parser.parse_args()
    common.prepare_process()
    torch.set_num_threads(args.threads)
    root = common.data_root(args.data)
    dm = ptb_data(root, args.bs, args.bptt)
    tokens = sum(x.numel() for _, (x, _) in zip(range(args.max_batches or 10**9), dm.train_dataloader()))
    print(f"ptb.valid.txt: {dm.stats['train_tokens']} tokens, vocab {len(dm.vocab)}; {tokens} training tokens "
          f"per epoch; bs {args.bs}, bptt {args.bptt}, drop_mult {args.drop_mult}, {args.threads} threads",
          file=sys.stderr)
    fastai = common.import_fastai("fastai.text.all", not args.no_fastai)
    peers = ["fastlight"] + (["fastai"] if fastai is not None else [])
    results = {}
    for peer in peers:
        torch.manual_seed(0)
        torch.set_num_threads(args.threads)
        t = time.perf_counter()
        results[peer] = run_fastlight(args, root) if peer == "fastlight" else run_fastai(args, dm)
        results[peer]["wall"] = time.perf_counter() - t
        e = results[peer]["epochs"]
        print(f"  {peer}: {[round(tokens / x.wall) for x in e]} tokens/s per epoch, test ppl "
              f"{results[peer]['test_ppl']:.1f}, {results[peer]['wall']:.0f} s in all", file=sys.stderr, flush=True)
    speed = {p: common.median(tokens / e.wall for e in results[p]["epochs"]) for p in peers}
    cpu = {p: common.median(tokens / e.cpu for e in results[p]["epochs"]) for p in peers}
    ppl = {p: results[p]["test_ppl"] for p in peers}
    print(common.peers_table(peers, [
        common.Column("train tokens/s", speed, ".0f", ("fastai",)),
        common.Column("tokens/CPU-s", cpu, ".0f", ("fastai",)),
        common.Column(f"ptb.test ppl ({args.epochs} ep{', partial' if args.max_batches else ''})", ppl, ".1f"),
    ]))


if __name__ == "__main__":
    main()
