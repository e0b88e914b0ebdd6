"""Tabular on UCI Adult: fastlight vs fastai's tabular_learner vs a plain PyTorch loop.

fastai's tutorial recipe for all three, on the SAME rows: adult.data split by fastai's
RandomSplitter(0.2, seed=42) once (fastlight's split, handed to fastai as explicit indices and
checked against fastai's own RandomSplitter), adult.test as the test set; the lesson's columns
(cat: workclass, education, marital-status, occupation, relationship, race; cont: age, fnlwgt,
education-num) through Categorify, FillMissing and Normalize; TabularModel [200, 100]; batch
size 64; Adam(0.9, 0.99, eps 1e-5) with decoupled wd 0.01 (none on BatchNorm and biases);
fit_one_cycle(3, 1e-2) (pct_start 0.25, div 25, final div 1e5, moms 0.95-0.85-0.95).

Accuracies are after the last epoch (median over repeats; each repeat has its own init seed).
Seconds per epoch include validation (every peer validates every epoch) and are the median over
all epochs of all repeats, as wall-clock time and as this process's CPU time (steadier on a
shared machine). Every peer runs with the same torch thread count (--threads, default 1).

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_tabular.py
    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_tabular.py --repeats 5 --threads 2

fastai is optional (`pip install -e ".[bench]"`); without it its row is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from fastlight.data.tabular import AdultData
from fastlight.models.tabular import TabularModel
from fastlight.training.layer_groups import param_groups

try:
    import fastai.tabular.all as fastai_tabular
    from fastai.callback.core import Callback as FastaiCallback
except ImportError:
    fastai_tabular = None
    FastaiCallback = object

os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"  # as run.py: every peer runs with the same setting
torch.set_flush_denormal(True)

CAT = ["workclass", "education", "marital-status", "occupation", "relationship", "race"]
CONT = ["age", "fnlwgt", "education-num"]
EPOCHS, LR, WD, BS, SPLIT_SEED = 3, 1e-2, 0.01, 64, 42
REPO = Path(__file__).resolve().parents[2]


def adult(root: Path) -> AdultData:
    dm = AdultData(root=str(root), download=False, cat_names=CAT, cont_names=CONT, y_name="salary", seed=SPLIT_SEED)
    dm.prepare_data()
    dm.setup()
    return dm


# --- plain PyTorch: the loop one would write by hand, on fastlight's processed tensors ----------
def run_plain(dm: AdultData, seed: int) -> tuple[list, float, float]:
    (tc, tn, ty), valid, test = dm.train, dm.valid, dm.test
    torch.manual_seed(seed)
    model = TabularModel(**{**dm.dims, "layers": [200, 100]})
    opt = torch.optim.AdamW(param_groups([model], LR, WD), lr=LR, betas=(0.9, 0.99), eps=1e-5)
    n_batches = len(ty) // BS  # drop_last, as fastai's training loader
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=EPOCHS * n_batches, pct_start=0.25, div_factor=25.0,
        final_div_factor=1e5 / 25.0, base_momentum=0.85, max_momentum=0.95)

    @torch.no_grad()
    def accuracy(split) -> float:
        model.eval()
        c, n, y = split
        return float((model(c, n).argmax(1) == y).float().mean())

    times, acc = [], float("nan")
    for epoch in range(EPOCHS):
        start, cpu = time.perf_counter(), time.process_time()
        model.train()
        order = torch.randperm(len(ty), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        ec, en, ey = tc[order], tn[order], ty[order]
        for b in range(n_batches):
            s = slice(b * BS, (b + 1) * BS)
            loss = F.cross_entropy(model(ec[s], en[s]), ey[s])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(valid)
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times, acc, accuracy(test)


# --- fastlight: the real `python train.py task=tabular` path, in this process --------------------
class EpochTimer(L.Callback):
    """Wall and CPU time of each training epoch (its validation and checkpoints included)."""

    times: list = []
    last_acc = float("nan")

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        EpochTimer.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))
        EpochTimer.last_acc = float(trainer.callback_metrics["val/acc"])


def run_fastlight(root: Path, seed: int, logger: str, extra: list[str]) -> tuple[list, float, float]:
    from fastlight import config, run

    run_dir = Path(tempfile.mkdtemp(prefix="bench_tabular_"))
    overrides = [
        "task=tabular", "data=adult", f"data.root={root}", f"data.seed={SPLIT_SEED}", f"seed={seed}",
        f"logger={logger}", "+trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
        "+callbacks.epoch_timer._target_=__main__.EpochTimer", *extra,
    ]
    cfg = config.compose(overrides, run_dir, job_name="bench")
    EpochTimer.times = []
    run.train(cfg)
    import json

    test_acc = json.loads((run_dir / "summary.json").read_text())["metrics"]["test/acc"]
    return list(EpochTimer.times), EpochTimer.last_acc, test_acc


# --- fastai: the tutorial's code -----------------------------------------------------------------
class FastaiEpochTimer(FastaiCallback):
    def before_epoch(self):
        self._start = (time.perf_counter(), time.process_time())

    def after_epoch(self):
        self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def run_fastai(dm: AdultData, seed: int) -> tuple[list, float, float]:
    import pandas as pd

    ft = fastai_tabular
    train, valid, test = dm.frames()
    df = pd.concat([train, valid], ignore_index=True)
    splits = (list(range(len(train))), list(range(len(train), len(df))))
    # The same rows as fastai's own RandomSplitter(0.2, seed=42) would pick from adult.data:
    raw = dm.raw()[0]
    own_valid = ft.RandomSplitter(0.2, seed=SPLIT_SEED)(raw)[1]
    assert raw.iloc[list(own_valid)].reset_index(drop=True).equals(valid), "fastai's split differs from ours"
    ft.set_seed(seed)
    to = ft.TabularPandas(df, procs=[ft.Categorify, ft.FillMissing, ft.Normalize], cat_names=CAT,
                          cont_names=CONT, y_names="salary", splits=splits)
    dls = to.dataloaders(bs=BS)
    learn = ft.tabular_learner(dls, layers=[200, 100], metrics=ft.accuracy)
    timer = FastaiEpochTimer()
    timer.times = []
    with learn.no_bar(), learn.no_logging():  # the quietest fastai: no progress bar, no printing
        learn.fit_one_cycle(EPOCHS, LR, cbs=[timer])
        val_acc = float(learn.validate()[1])
        test_acc = float(learn.validate(dl=dls.test_dl(test, with_labels=True))[1])
    return timer.times, val_acc, test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = os.environ.get("FASTLIGHT_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", default=default_root, help="the data root holding adult/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every peer (fastlight's default: 1)")
    parser.add_argument("--logger", default="csv", help="fastlight's logger: csv | wandb | none")
    parser.add_argument("--peers", nargs="+", default=["plain", "fastlight", "fastai"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fastlight overrides, e.g. --set data.steps_per_call=8")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    root = Path(args.data)
    dm = adult(root)
    peers = [p for p in args.peers if p != "fastai" or fastai_tabular is not None]
    if "fastai" in args.peers and fastai_tabular is None:
        print("fastai is not installed: its row is skipped (pip install -e '.[bench]')")
    extra = [f"torch_threads={args.threads}", *args.set]
    runners = {
        "plain": lambda seed: run_plain(dm, seed),
        "fastlight": lambda seed: run_fastlight(root, seed, args.logger, extra),
        "fastai": lambda seed: run_fastai(dm, seed),
    }
    times = {p: [] for p in peers}
    accs = {p: [] for p in peers}
    for rep in range(args.repeats):
        for p in peers[rep % len(peers):] + peers[: rep % len(peers)]:  # rotate the order: fair to drifts
            torch.set_num_threads(args.threads)
            t, val_acc, test_acc = runners[p](SPLIT_SEED + rep)
            times[p] += t
            accs[p].append((val_acc, test_acc))
            print(f"  repeat {rep} {p:9s}: {statistics.median(w for w, _ in t):.3f} s/epoch "
                  f"({statistics.median(c for _, c in t):.3f} CPU s), valid acc {val_acc:.4f}, test acc {test_acc:.4f}",
                  file=sys.stderr, flush=True)
    print(f"\nUCI Adult: {len(dm.train[2])} train / {len(dm.valid[2])} valid (RandomSplitter 0.2, seed 42) / "
          f"{len(dm.test[2])} test rows; [200, 100], bs {BS}, fit_one_cycle({EPOCHS}, {LR}), wd {WD}; "
          f"{args.repeats} repeats, torch threads {args.threads}")
    print(f"{'':10s} {'valid acc':>9s} {'test acc':>9s} {'s/epoch':>8s} {'vs plain':>9s} {'vs fastai':>10s}"
          f" {'CPU s/epoch':>12s} {'vs plain':>9s} {'vs fastai':>10s}")
    wall = {p: statistics.median(w for w, _ in times[p]) for p in peers}
    cpu = {p: statistics.median(c for _, c in times[p]) for p in peers}

    def ratio(med, p, ref):
        return f"{med[p] / med[ref]:.2f}x" if ref in med else "-"

    for p in peers:
        val_acc = statistics.median(v for v, _ in accs[p])
        test_acc = statistics.median(t for _, t in accs[p])
        print(f"{p:10s} {val_acc:9.4f} {test_acc:9.4f} {wall[p]:8.3f} {ratio(wall, p, 'plain'):>9s} "
              f"{ratio(wall, p, 'fastai'):>10s} {cpu[p]:12.3f} {ratio(cpu, p, 'plain'):>9s} "
              f"{ratio(cpu, p, 'fastai'):>10s}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
