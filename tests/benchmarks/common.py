"""What every peer benchmark shares: the process setup, the epoch timers (fastlight's and fastai's),
interleaved repeats, the real `train.py` run in this process, and the peers' side-by-side table.

A benchmark script imports it as `common` (its own folder is first on sys.path when it runs as
`python tests/benchmarks/bench_<x>.py`). Timing rules, the same for every peer of a benchmark:

- scope "epoch": from the start of a training epoch to its end, validation included (Lightning
  runs the epoch's validation before `on_train_epoch_end`; fastai: before_epoch -> after_epoch);
- scope "train": from the start of the epoch to the end of its last training batch, validation
  excluded (fastai: before_train -> after_train);
- wall-clock seconds and this process's CPU seconds (steadier on a shared machine), and the rows
  seen, for throughput;
- repeats interleave the peers in a rotating order, so a drift of the machine's speed is shared;
  tables show medians.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH_EXTRA = "pip install -e '.[bench]'"


def prepare_process() -> None:
    """The settings `fastlight.run` applies, applied for every peer in this process."""
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"  # `import lightning` turns it on: ~0.3 ms a step
    torch.set_flush_denormal(True)  # as run.py: denormals slow some CPUs 4-6x
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


def data_root(arg: str | None = None) -> Path:
    """--data, else $FASTLIGHT_DATA, else ../shared/data beside the checkout."""
    return Path(arg or os.environ.get("FASTLIGHT_DATA") or REPO.parent / "shared" / "data")


def import_fastai(module: str = "fastai", wanted: bool = True):
    """fastai's `module`, or None, having said in one line that its row is skipped and how to get it."""
    if not wanted:
        return None
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"fastai is not installed ({e.name}): its row is skipped ({BENCH_EXTRA})", file=sys.stderr)
        return None


@dataclass
class Epoch:
    wall: float  # seconds
    cpu: float  # this process's CPU seconds
    rows: int = 0  # training rows (images, ratings, ...) seen
    metrics: dict[str, float] = field(default_factory=dict)  # val/* at the epoch's end (fastlight only)


def _rows(batch) -> int:
    last = batch[-1] if isinstance(batch, (list, tuple)) else batch
    return len(last) if hasattr(last, "__len__") else 0


class EpochTimer(L.Callback):
    """fastlight's side: added from the command line (`timer_overrides`); Hydra builds the instance
    inside `fastlight.run.train`, so the epochs are kept on the class (`EpochTimer.epochs`)."""

    epochs: list[Epoch] = []

    def __init__(self, scope: str = "epoch"):
        assert scope in ("epoch", "train"), scope
        self.scope = scope

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = self._end = (time.perf_counter(), time.process_time())
        self._rows = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._rows += _rows(batch)
        self._end = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, trainer, pl_module):
        end = (time.perf_counter(), time.process_time()) if self.scope == "epoch" else self._end
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        EpochTimer.epochs.append(Epoch(end[0] - self._start[0], end[1] - self._start[1], self._rows, metrics))


def timer_overrides(scope: str = "epoch") -> list[str]:
    """The overrides that add `EpochTimer` to a fastlight run (and clear what an earlier run kept)."""
    EpochTimer.epochs = []
    target = f"{EpochTimer.__module__}.{EpochTimer.__qualname__}"
    return [f"+callbacks.epoch_timer._target_={target}", f"+callbacks.epoch_timer.scope={scope}"]


def fastai_timer(scope: str = "epoch"):
    """fastai's side of the same timer: a fastai Callback whose `.epochs` fill as it trains."""
    from fastai.callback.core import Callback

    begin, end = ("before_epoch", "after_epoch") if scope == "epoch" else ("before_train", "after_train")

    class FastaiEpochTimer(Callback):
        def __init__(self):
            self.epochs: list[Epoch] = []

        def start(self):
            self._start, self._rows = (time.perf_counter(), time.process_time()), 0

        def after_batch(self):
            if self.training:
                self._rows += len(self.yb[0])

        def stop(self):
            self.epochs.append(Epoch(time.perf_counter() - self._start[0], time.process_time() - self._start[1],
                                     self._rows))

    setattr(FastaiEpochTimer, begin, FastaiEpochTimer.start)
    setattr(FastaiEpochTimer, end, FastaiEpochTimer.stop)
    return FastaiEpochTimer()


def fastai_bf16(args) -> bool:
    """Whether fastai runs bf16 (`--fastai-precision`, else `--precision`): through `fastai_cpu_autocast`."""
    return (args.fastai_precision or args.precision) == "bf16"


def fastai_cpu_autocast():
    """bf16 autocast on CPU around fastai's forward and loss (fastai's MixedPrecision is CUDA-only)."""
    from fastai.callback.core import Callback

    class CPUAutocast(Callback):
        def before_batch(self):
            self.ctx = torch.autocast("cpu", dtype=torch.bfloat16)
            self.ctx.__enter__()

        def after_loss(self):
            self.ctx.__exit__(None, None, None)

    return CPUAutocast()


def run_fastlight(overrides: Sequence[str], prefix: str = "bench_", quiet: bool = False,
                  run_dir: Path | None = None) -> tuple[dict, Path]:
    """The real `python train.py <overrides>` run, in this process: (its summary.json, its folder)."""
    from fastlight import config, run

    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix=prefix))
    cfg = config.compose(list(overrides), run_dir, job_name="bench")
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull if quiet else sys.stdout):
        run.train(cfg)
    return json.loads((run_dir / "summary.json").read_text()), run_dir


def interleaved(peers: Sequence[str], repeats: int, run: Callable[[str, int], object],
                describe: Callable[[object], str] | None = None, threads: int | None = None) -> dict[str, list]:
    """run(peer, repeat) for every repeat and peer, the order rotated each repeat: {peer: [result per repeat]}."""
    results: dict[str, list] = {p: [] for p in peers}
    for rep in range(repeats):
        shift = rep % len(peers)
        for peer in [*peers[shift:], *peers[:shift]]:
            if threads is not None:
                torch.set_num_threads(threads)  # a peer may have changed it
            results[peer].append(result := run(peer, rep))
            if describe is not None:
                print(f"  repeat {rep} {peer:9s}: {describe(result)}", file=sys.stderr, flush=True)
    return results


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def paired_difference(ours: Sequence[float], theirs: Sequence[float], fmt: str = ".3f") -> str:
    """fastlight - fastai paired by seed: the mean, its 95% CI, and how much a seed moves each peer."""
    from scipy.stats import t  # installed with fastai

    d = [a - b for a, b in zip(ours, theirs)]
    mean, half = statistics.mean(d), t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / len(d) ** 0.5
    return (f"fastlight - fastai, paired by seed: mean {mean:+{fmt}}, 95% CI {mean - half:+{fmt}} .. "
            f"{mean + half:+{fmt}} (n {len(d)}; per-seed sd fastlight {statistics.stdev(ours):{fmt}}, "
            f"fastai {statistics.stdev(theirs):{fmt}})")


def seed_report(metric: str, per_seed: dict[str, list[float]], fmt: str = ".3f") -> str:
    """Each peer's `metric` seed by seed, then (fastlight and fastai, 3+ seeds) their paired difference."""
    lines = [f"{p:9s} {metric} per seed: " + " ".join(format(v, fmt) for v in vs) for p, vs in per_seed.items()]
    if set(per_seed) == {"fastlight", "fastai"} and len(per_seed["fastlight"]) > 2:
        lines.append(paired_difference(per_seed["fastlight"], per_seed["fastai"], fmt))
    return "\n".join(lines)


@dataclass
class Column:
    """One measured quantity per peer, optionally followed by its ratio to reference peers."""

    name: str
    values: dict[str, float]
    fmt: str = ".3f"
    vs: tuple[str, ...] = ()  # e.g. ("plain", "fastai"): "vs plain" = this peer's value / plain's


def peers_table(peers: Sequence[str], columns: Sequence[Column]) -> str:
    """The peers side by side: a row per peer, a column per quantity and ratio (refs absent: skipped)."""
    header = [""]
    for c in columns:
        header += [c.name] + [f"vs {ref}" for ref in c.vs if ref in peers]
    rows = []
    for p in peers:
        row = [p]
        for c in columns:
            row.append(format(c.values[p], c.fmt))
            row += [f"{c.values[p] / c.values[ref]:.2f}x" for ref in c.vs if ref in peers]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [" ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "\n".join(lines)
