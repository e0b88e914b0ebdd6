"""The local run record: what a run leaves in its own folder, read later by `fastlight.compare`.

    <run folder>/config.yaml     the fully resolved config
    <run folder>/metrics.csv     one row per logged step/epoch (Lightning's CSVLogger)
    <run folder>/summary.json    task, status, optimized metric, final/best metrics, timings,
                                 seed, git sha, library versions, and the error if it failed
    <run folder>/checkpoints/    last.ckpt and best.ckpt

`summary.json` is written when the run starts (status "running") and rewritten atomically when
it ends, whatever the ending, so a crashed or interrupted run still says what happened.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

import lightning as L

STATUSES = ("running", "completed", "failed", "interrupted")


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__}


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class RunRecord:
    """Owns `summary.json` for one run (run_dir None: keeps the data, writes nothing, as DDP ranks > 0)."""

    def __init__(self, run_dir: Path | None, task: str, seed: int, optimized_metric: dict, extra: dict | None = None):
        self.path = Path(run_dir) / "summary.json" if run_dir is not None else None
        self.started = time.time()
        self.data = {
            "task": task,
            "status": "running",
            "optimized_metric": {"name": optimized_metric["name"], "value": None, "mode": optimized_metric["mode"]},
            "metrics": {},
            "best_epoch": None,
            "wall_time_s": 0.0,
            "seed": seed,
            "git_sha": git_sha(Path(__file__).parent),
            "versions": versions(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "error": None,
            **(extra or {}),
        }
        self.save()

    def save(self) -> None:
        self.data["wall_time_s"] = round(time.time() - self.started, 3)
        if self.path is not None:
            write_json_atomic(self.path, self.data)

    def finish(self, status: str, metrics: dict | None = None, error: str | None = None, **extra) -> None:
        assert status in STATUSES
        self.data["status"] = status
        if metrics:
            self.data["metrics"].update({k: finite_or_none(v) for k, v in metrics.items()})
        name = self.data["optimized_metric"]["name"]
        self.data["optimized_metric"]["value"] = self.data["metrics"].get(name)
        self.data["error"] = error
        self.data.update(extra)
        self.save()


class BestValidation(L.Callback):
    """Keeps every `val/*` metric as it was at the epoch where the monitored metric was best."""

    def __init__(self, monitor: str, mode: str):
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.metrics: dict[str, float] = {}
        self.epoch: int | None = None

    def on_validation_end(self, trainer, pl_module):  # after the module's own epoch-end logging
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            return
        current = float(current)
        better = self.best is None or (current < self.best if self.mode == "min" else current > self.best)
        if better and math.isfinite(current):
            self.best = current
            self.epoch = trainer.current_epoch
            self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def state_dict(self):
        return {"best": self.best, "metrics": self.metrics, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.best, self.metrics, self.epoch = state["best"], state["metrics"], state["epoch"]
