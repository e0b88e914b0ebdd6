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
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fastlight.data.collab import COLUMNS, random_split
from fastlight.models.collab import EmbeddingDotBias

try:
    import fastai.collab as fastai_collab
    from fastai.callback.core import Callback as FastaiCallback
except ImportError:
    fastai_collab = None
    FastaiCallback = object

# `import lightning` turned this on; run.py turns it off. Every peer runs with the same setting.
os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
torch.set_flush_denormal(True)  # as run.py does

EPOCHS, N_FACTORS, LR, WD, VALID_PCT, SEED = 5, 50, 5e-3, 0.1, 0.2, 42
REPO = Path(__file__).resolve().parents[2]


# --- plain PyTorch: the loop one would write by hand, with the same data in memory --------------
def run_plain(ratings: pd.DataFrame, bs: int) -> tuple[list[float], float]:
    train_rows, valid_rows = random_split(len(ratings), VALID_PCT, SEED)
    users_ix = pd.Index(np.sort(ratings.user.iloc[train_rows].unique()))
    items_ix = pd.Index(np.sort(ratings.item.iloc[train_rows].unique()))
    u = torch.from_numpy(users_ix.get_indexer(ratings.user) + 1)
    i = torch.from_numpy(items_ix.get_indexer(ratings.item) + 1)
    r = torch.from_numpy(ratings.rating.to_numpy(np.float32))
    t, v = torch.from_numpy(train_rows), torch.from_numpy(valid_rows)
    tu, ti, tr, vu, vi, vr = u[t], i[t], r[t], u[v], i[v], r[v]
    torch.manual_seed(SEED)
    model = EmbeddingDotBias(len(users_ix) + 1, len(items_ix) + 1, N_FACTORS, (0.0, 5.5))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), eps=1e-5, weight_decay=WD)
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
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times, mse


# --- fastlight: the real `python train.py task=collab` path, in this process --------------------
class EpochTimer(L.Callback):
    """Wall time of each training epoch (its validation and checkpoint included) and the last val/mse."""

    times: list[float] = []
    last_mse = float("nan")

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        EpochTimer.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))
        EpochTimer.last_mse = float(trainer.callback_metrics["val/mse"])


def run_fastlight(data_root: Path, bs: int, logger: str, extra: list[str]) -> tuple[list[float], float]:
    from fastlight import config, run

    run_dir = Path(tempfile.mkdtemp(prefix="bench_collab_"))
    overrides = [
        "task=collab", "data=ml100k", f"data.root={data_root}", f"data.batch_size={bs}", f"logger={logger}",
        "+callbacks.epoch_timer._target_=__main__.EpochTimer", *extra,
    ]
    cfg = config.compose(overrides, run_dir, job_name="bench")
    EpochTimer.times = []
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # keep the table readable
        run.train(cfg)
    return list(EpochTimer.times), EpochTimer.last_mse


# --- fastai: the lesson's code ------------------------------------------------------------------
class FastaiEpochTimer(FastaiCallback):
    def before_epoch(self):
        self._start = (time.perf_counter(), time.process_time())

    def after_epoch(self):
        self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def run_fastai(ratings: pd.DataFrame, bs: int) -> tuple[list[float], float]:
    from fastai.torch_core import set_seed

    set_seed(SEED)
    dls = fastai_collab.CollabDataLoaders.from_df(ratings[["user", "item", "rating"]], valid_pct=VALID_PCT,
                                                  seed=SEED, bs=bs)
    _, valid_rows = random_split(len(ratings), VALID_PCT, SEED)
    assert sorted(dls.valid.items.index) == sorted(valid_rows.tolist()), "fastai's split differs from ours"
    learn = fastai_collab.collab_learner(dls, n_factors=N_FACTORS, y_range=(0, 5.5))
    timer = FastaiEpochTimer()
    timer.times = []
    with learn.no_bar(), learn.no_logging():  # the quietest fastai: no progress bar, no printing
        learn.fit_one_cycle(EPOCHS, LR, wd=WD, cbs=[timer])
        mse = float(learn.validate()[0])
    return timer.times, mse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = os.environ.get("FASTLIGHT_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", default=default_root, help="the data root holding ml-100k/")
    parser.add_argument("--bs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--logger", default="csv", help="fastlight's logger: csv | wandb | none")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every peer (default 1: a 64-row step gains nothing from more, "
                             "and on a shared machine each multi-threaded op waits for a busy core)")
    parser.add_argument("--peers", nargs="+", default=["plain", "fastlight", "fastai"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fastlight overrides, e.g. --set data.steps_per_call=16")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    root = Path(args.data)
    ratings = pd.read_csv(root / "ml-100k" / "u.data", sep="\t", header=None, names=COLUMNS)
    peers = [p for p in args.peers if p != "fastai" or fastai_collab is not None]
    if "fastai" in args.peers and fastai_collab is None:
        print("fastai is not installed: its row is skipped (pip install -e '.[bench]')")
    runners = {
        "plain": lambda bs: run_plain(ratings, bs),
        "fastlight": lambda bs: run_fastlight(root, bs, args.logger, args.set),
        "fastai": lambda bs: run_fastai(ratings, bs),
    }
    threads = args.threads
    for bs in args.bs:
        times = {p: [] for p in peers}
        mses = {p: [] for p in peers}
        for rep in range(args.repeats):
            for p in peers[rep % len(peers):] + peers[: rep % len(peers)]:  # rotate the order: fair to drifts
                torch.set_num_threads(threads)
                t, mse = runners[p](bs)
                times[p] += t
                mses[p].append(mse)
                print(f"  bs {bs} repeat {rep} {p:9s}: {statistics.median(w for w, _ in t):.3f} s/epoch "
                      f"({statistics.median(c for _, c in t):.3f} CPU s), valid MSE {mse:.4f}",
                      file=sys.stderr, flush=True)
        print(f"\nML-100K, 20% random valid (seed 42), {EPOCHS} epochs, n_factors {N_FACTORS}, wd {WD}, lr {LR}, "
              f"batch size {bs}; {args.repeats} repeats, torch threads {threads}")
        print(f"{'':10s} {'valid MSE':>10s} {'s/epoch':>8s} {'vs plain':>9s} {'vs fastai':>10s}"
              f" {'CPU s/epoch':>12s} {'vs plain':>9s} {'vs fastai':>10s}")
        wall = {p: statistics.median(w for w, _ in times[p]) for p in peers}
        cpu = {p: statistics.median(c for _, c in times[p]) for p in peers}

        def ratio(med, p, ref):
            return f"{med[p] / med[ref]:.2f}x" if ref in med else "-"

        for p in peers:
            print(f"{p:10s} {statistics.median(mses[p]):10.4f} {wall[p]:8.3f} {ratio(wall, p, 'plain'):>9s} "
                  f"{ratio(wall, p, 'fastai'):>10s} {cpu[p]:12.3f} {ratio(cpu, p, 'plain'):>9s} "
                  f"{ratio(cpu, p, 'fastai'):>10s}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
