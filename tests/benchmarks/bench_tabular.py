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
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (Column, Epoch, EpochTimer, data_root, fastai_timer, import_fastai, interleaved, median,
                    peers_table, prepare_process, run_fastlight, timer_overrides)

from fastlight.data.tabular import AdultData
from fastlight.models.tabular import TabularModel
from fastlight.training.layer_groups import param_groups

prepare_process()

CAT = ["workclass", "education", "marital-status", "occupation", "relationship", "race"]
CONT = ["age", "fnlwgt", "education-num"]
EPOCHS, LR, WD, BS, SPLIT_SEED = 3, 1e-2, 0.01, 64, 42


def adult(root: Path) -> AdultData:
    dm = AdultData(root=str(root), download=False, cat_names=CAT, cont_names=CONT, y_name="salary", seed=SPLIT_SEED)
    dm.prepare_data()
    dm.setup()
    return dm


# --- plain PyTorch: the loop one would write by hand, on fastlight's processed tensors ----------
def run_plain(dm: AdultData, seed: int, fused: bool = False) -> tuple[list[Epoch], float, float]:
    (tc, tn, ty), valid, test = dm.train, dm.valid, dm.test
    torch.manual_seed(seed)
    model = TabularModel(**{**dm.dims, "layers": [200, 100]})
    opt = torch.optim.AdamW(param_groups([model], LR, WD), lr=LR, betas=(0.9, 0.99), eps=1e-5, fused=fused or None)
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
        times.append(Epoch(time.perf_counter() - start, time.process_time() - cpu, n_batches * BS))
    return times, acc, accuracy(test)


# --- fastlight: the real `python train.py task=tabular` path, in this process --------------------
def run_fastlight_tabular(root, seed: int, logger: str, extra: list[str]) -> tuple[list[Epoch], float, float]:
    overrides = [
        "task=tabular", "data=adult", f"data.root={root}", f"data.seed={SPLIT_SEED}", f"seed={seed}",
        f"logger={logger}", "+trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
        *timer_overrides("epoch"), *extra,
    ]
    summary, _ = run_fastlight(overrides, prefix="bench_tabular_")
    times = list(EpochTimer.epochs)
    return times, times[-1].metrics["val/acc"], summary["metrics"]["test/acc"]


# --- fastai: the tutorial's code -----------------------------------------------------------------
def run_fastai(dm: AdultData, seed: int) -> tuple[list[Epoch], float, float]:
    import fastai.tabular.all as ft
    import pandas as pd

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
    timer = fastai_timer("epoch")
    with learn.no_bar(), learn.no_logging():  # the quietest fastai: no progress bar, no printing
        learn.fit_one_cycle(EPOCHS, LR, cbs=[timer])
        val_acc = float(learn.validate()[1])
        test_acc = float(learn.validate(dl=dls.test_dl(test, with_labels=True))[1])
    return timer.epochs, val_acc, test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="the data root holding adult/ (default: $FASTLIGHT_DATA, ../shared/data)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every peer (fastlight's default: 1)")
    parser.add_argument("--logger", default="csv", help="fastlight's logger: csv | wandb | none")
    parser.add_argument("--peers", nargs="+", default=["plain", "plain_fused", "fastlight", "fastai"],
                        help="plain_fused: the plain loop with torch's fused AdamW, as fastlight's default optimizer")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra fastlight overrides, e.g. --set data.steps_per_call=8")
    args = parser.parse_args()
    root = data_root(args.data)
    dm = adult(root)
    with_fastai = import_fastai("fastai.tabular.all", "fastai" in args.peers) is not None
    peers = [p for p in args.peers if p != "fastai" or with_fastai]
    extra = [f"torch_threads={args.threads}", *args.set]
    runners = {
        "plain": lambda seed: run_plain(dm, seed),
        "plain_fused": lambda seed: run_plain(dm, seed, fused=True),
        "fastlight": lambda seed: run_fastlight_tabular(root, seed, args.logger, extra),
        "fastai": lambda seed: run_fastai(dm, seed),
    }
    results = interleaved(
        peers, args.repeats, lambda p, rep: runners[p](SPLIT_SEED + rep), threads=args.threads,
        describe=lambda r: (f"{median(e.wall for e in r[0]):.3f} s/epoch ({median(e.cpu for e in r[0]):.3f} CPU s), "
                            f"valid acc {r[1]:.4f}, test acc {r[2]:.4f}"))
    epochs = {p: [e for times, _, _ in results[p] for e in times] for p in peers}  # every epoch of every repeat
    print(f"\nUCI Adult: {len(dm.train[2])} train / {len(dm.valid[2])} valid (RandomSplitter 0.2, seed 42) / "
          f"{len(dm.test[2])} test rows; [200, 100], bs {BS}, fit_one_cycle({EPOCHS}, {LR}), wd {WD}; "
          f"{args.repeats} repeats, torch threads {args.threads}")
    print(peers_table(peers, [
        Column("valid acc", {p: median(r[1] for r in results[p]) for p in peers}, ".4f"),
        Column("test acc", {p: median(r[2] for r in results[p]) for p in peers}, ".4f"),
        Column("s/epoch", {p: median(e.wall for e in epochs[p]) for p in peers}, ".3f", ("plain", "fastai")),
        Column("CPU s/epoch", {p: median(e.cpu for e in epochs[p]) for p in peers}, ".3f", ("plain", "fastai")),
    ]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
