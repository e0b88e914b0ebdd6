"""Collab on MovieLens 100K: fastlight vs fastai's collab_learner vs a plain PyTorch loop.

The lesson's recipe for all three, on the SAME rows (fastai's RandomSplitter: 20% valid, seed
42, checked against fastai's own split): EmbeddingDotBias with 50 factors, y_range (0, 5.5),
MSE, Adam(0.9, 0.99, eps 1e-5) with decoupled wd 0.1, one-cycle to 5e-3 over 5 epochs.
Seconds per epoch include validation (each peer validates every epoch) and are the median over
all epochs of all repeats, as wall-clock time and as this process's CPU time (steadier on a
shared machine); valid MSE is after the last epoch (median over repeats).

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_collab.py            # bs 64 and 1024
    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_collab.py --bs 64 --repeats 5

fastai is optional (`pip install -e ".[bench]"`); without it its row is skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from common import (Column, Epoch, EpochTimer, data_root, fastai_timer, import_fastai, interleaved, median, peers_table,
                    prepare_process, run_fastlight, timer_overrides)

from fastlight.data.collab import COLUMNS
from fastlight.data.split import random_split_indices
from fastlight.models.collab import EmbeddingDotBias

prepare_process()
EPOCHS, N_FACTORS, LR, WD, VALID_PCT, SEED = 5, 50, 5e-3, 0.1, 0.2, 42


# --- plain PyTorch: the loop one would write by hand, with the same data in memory --------------
def run_plain(ratings: pd.DataFrame, bs: int, fused: bool = False) -> tuple[list[Epoch], float]:
    train_rows, valid_rows = random_split_indices(len(ratings), VALID_PCT, SEED)
    users_ix = pd.Index(np.sort(ratings.user.iloc[train_rows].unique()))
    items_ix = pd.Index(np.sort(ratings.item.iloc[train_rows].unique()))
    u = torch.from_numpy(users_ix.get_indexer(ratings.user) + 1)
    i = torch.from_numpy(items_ix.get_indexer(ratings.item) + 1)
    r = torch.from_numpy(ratings.rating.to_numpy(np.float32))
    t, v = torch.from_numpy(train_rows), torch.from_numpy(valid_rows)
    tu, ti, tr, vu, vi, vr = u[t], i[t], r[t], u[v], i[v], r[v]
    torch.manual_seed(SEED)
    model = EmbeddingDotBias(len(users_ix) + 1, len(items_ix) + 1, N_FACTORS, (0.0, 5.5))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), eps=1e-5, weight_decay=WD,
                            fused=fused or None)
    n_batches = -(-len(tr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=EPOCHS * n_batches, pct_start=0.25, div_factor=25.0,
        final_div_factor=1e5 / 25.0, base_momentum=0.85, max_momentum=0.95)
    times, mse = [], float("nan")
    for epoch in range(EPOCHS):
        start, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(tr), generator=torch.Generator().manual_seed(SEED * 100_003 + epoch))
        eu, ei, er = tu[order], ti[order], tr[order]
        for b in range(n_batches):
            s = slice(b * bs, (b + 1) * bs)
            loss = F.mse_loss(model(eu[s], ei[s]), er[s])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            sse = sum(float(((model(vu[s], vi[s]) - vr[s]) ** 2).sum())
                      for s in (slice(k, k + 4096) for k in range(0, len(vr), 4096)))
        mse = sse / len(vr)
        times.append(Epoch(time.perf_counter() - start, time.process_time() - cpu, len(tr)))
    return times, mse


# --- fastlight: the real `python train.py task=collab` path, in this process --------------------
def run_fastlight_collab(root, bs: int, logger: str, extra: list[str]) -> tuple[list[Epoch], float]:
    overrides = ["task=collab", "data=ml100k", f"data.root={root}", f"data.batch_size={bs}", f"logger={logger}",
                 *timer_overrides("epoch"), *extra]
    run_fastlight(overrides, prefix="bench_collab_", quiet=True)  # quiet: keep the table readable
    times = list(EpochTimer.epochs)
    return times, times[-1].metrics["val/mse"]


# --- fastai: the lesson's code ------------------------------------------------------------------
def run_fastai(ratings: pd.DataFrame, bs: int) -> tuple[list[Epoch], float]:
    from fastai.collab import CollabDataLoaders, collab_learner
    from fastai.torch_core import set_seed

    set_seed(SEED)
    dls = CollabDataLoaders.from_df(ratings[["user", "item", "rating"]], valid_pct=VALID_PCT, seed=SEED, bs=bs)
    _, valid_rows = random_split_indices(len(ratings), VALID_PCT, SEED)
    assert sorted(dls.valid.items.index) == sorted(valid_rows.tolist()), "fastai's split differs from ours"
    learn = collab_learner(dls, n_factors=N_FACTORS, y_range=(0, 5.5))
    timer = fastai_timer("epoch")
    with learn.no_bar(), learn.no_logging():  # the quietest fastai: no progress bar, no printing
        learn.fit_one_cycle(EPOCHS, LR, wd=WD, cbs=[timer])
        mse = float(learn.validate()[0])
    return timer.epochs, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="the data root holding ml-100k/ (default: $FASTLIGHT_DATA, ../shared/data)")
    parser.add_argument("--bs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--logger", default="csv", help="fastlight's logger: csv | wandb | none")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every peer (default 1: a 64-row step gains nothing from more, "
                             "and on a shared machine each multi-threaded op waits for a busy core)")
    parser.add_argument("--peers", nargs="+", default=["plain", "plain_fused", "fastlight", "fastai"],
                        help="plain_fused: the plain loop with torch's fused AdamW, as fastlight's default optimizer")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fastlight overrides, e.g. --set data.steps_per_call=16")
    args = parser.parse_args()
    root = data_root(args.data)
    ratings = pd.read_csv(root / "ml-100k" / "u.data", sep="\t", header=None, names=COLUMNS)
    with_fastai = import_fastai("fastai.collab", "fastai" in args.peers) is not None
    peers = [p for p in args.peers if p != "fastai" or with_fastai]
    for bs in args.bs:
        runners = {
            "plain": lambda: run_plain(ratings, bs),
            "plain_fused": lambda: run_plain(ratings, bs, fused=True),
            "fastlight": lambda: run_fastlight_collab(root, bs, args.logger, args.set),
            "fastai": lambda: run_fastai(ratings, bs),
        }
        results = interleaved(
            peers, args.repeats, lambda p, _: runners[p](), threads=args.threads,
            describe=lambda r: (f"{median(e.wall for e in r[0]):.3f} s/epoch ({median(e.cpu for e in r[0]):.3f} CPU s), "
                                f"valid MSE {r[1]:.4f}"))
        epochs = {p: [e for times, _ in results[p] for e in times] for p in peers}  # every epoch of every repeat
        print(f"\nML-100K, 20% random valid (seed 42), {EPOCHS} epochs, n_factors {N_FACTORS}, wd {WD}, lr {LR}, "
              f"batch size {bs}; {args.repeats} repeats, torch threads {args.threads}")
        print(peers_table(peers, [
            Column("valid MSE", {p: median(m for _, m in results[p]) for p in peers}, ".4f"),
            Column("s/epoch", {p: median(e.wall for e in epochs[p]) for p in peers}, ".3f", ("plain", "fastai")),
            Column("CPU s/epoch", {p: median(e.cpu for e in epochs[p]) for p in peers}, ".3f", ("plain", "fastai")),
        ]))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
