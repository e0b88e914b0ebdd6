"""The local run record: what a run leaves in its own folder, read later by `fastlight.compare`.

    <run folder>/config.yaml     the fully resolved config
    <run folder>/metrics.csv     one row per logged step/epoch (Lightning's CSVLogger)
    <run folder>/summary.json    task, status, optimized metric, final/best metrics, timings,
                                 seed, git sha, library versions, and the error if it failed
    <run folder>/checkpoints/    last.ckpt and best.ckpt

`summary.json` is written when the run starts (status "running"), refreshed at every validation
and epoch end and at least once a minute (`updated_at`, with the best validation metrics so far),
and rewritten atomically when the run ends, whatever the ending, so an interrupted or failed run
keeps what it learnt. A run killed outright (SIGKILL, the machine gone) cannot write its ending:
`fastlight.tracking.liveness.observed_status` reads such a summary as "killed" (its process is gone, or it has not reported
for a long while), with the time it last reported. An unfinished run's summary holds the command
line that resumes it from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import socket
import subprocess
import time
from pathlib import Path

import lightning as L



STATUSES = ("running", "completed", "failed", "interrupted")
HEARTBEAT_S = 60.0  # a running run refreshes updated_at at least this often (and every epoch)


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if t is None else t))


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
            "started_at": now_iso(self.started),
            "updated_at": now_iso(self.started),
            "updated_at_s": self.started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "error": None,
            **(extra or {}),
        }
        self.last_save = 0.0
        self.save()

    def save(self) -> None:
        t = time.time()
        self.data["wall_time_s"] = round(t - self.started, 3)
        self.data["updated_at"], self.data["updated_at_s"] = now_iso(t), round(t, 3)
        self.last_save = t
        if self.path is not None:
            write_json_atomic(self.path, self.data)

    def update_metrics(self, metrics: dict | None) -> None:
        """Merge `metrics` into the record; the optimized metric's value follows them."""
        self.data["metrics"].update({k: finite_or_none(v) for k, v in (metrics or {}).items()})
        name = self.data["optimized_metric"]["name"]
        self.data["optimized_metric"]["value"] = self.data["metrics"].get(name)

    def progress(self, metrics: dict, best_epoch: int | None, resume: str | None = None) -> None:
        """While running: the best validation metrics so far, and the heartbeat."""
        self.update_metrics(metrics)
        self.data["best_epoch"] = best_epoch
        if resume:
            self.data["resume"] = resume
        self.save()

    def finish(self, status: str, metrics: dict | None = None, error: str | None = None, **extra) -> None:
        assert status in STATUSES
        self.data["status"] = status
        self.update_metrics(metrics)
        self.data["error"] = error
        self.data.update(extra)
        if status == "completed":
            self.data.pop("resume", None)
        self.save()


def resume_command(overrides: list[str], ckpt: Path) -> str:
    """The command line that continues a run from `ckpt` (its own overrides, then ckpt_path)."""
    kept = [o for o in overrides if not o.startswith("ckpt_path=")]
    return shlex.join(["python", "train.py", *kept, f"ckpt_path={ckpt}"])


class RunRecorder(L.Callback):
    """What a run records about itself while it trains, as one callback (each callback costs on
    every optimizer step, for every per-step hook, so the run's own bookkeeping is one):

    - the best validation metrics: every `val/*` metric as it was at the epoch where the monitored
      metric was best (`metrics`, `epoch`), kept in checkpoints so a resumed run knows them;
    - `summary.json` kept current: those metrics, `updated_at` (every validation and epoch end, at
      least every minute), and the command that resumes the run;
    - on SIGTERM (what SLURM sends before preemption), `last.ckpt` saved at the step boundary where
      Lightning stops, so the run can continue;
    - in every checkpoint, the task that wrote it and the model's sizes (`checkpoints.tag`).
    """

    def __init__(self, record: RunRecord, monitor: str, mode: str, ckpt_dir: Path, overrides: list[str],
                 task: str, target: str):
        self.record, self.monitor, self.mode = record, monitor, mode
        self.ckpt_dir, self.overrides = Path(ckpt_dir), list(overrides)
        self.task, self.target = task, target
        self.best: float | None = None
        self.metrics: dict[str, float] = {}
        self.epoch: int | None = None
        self.sigterm_checkpoint: Path | None = None

    # --- the best validation metrics ---------------------------------------------------------------
    def on_validation_end(self, trainer, pl_module):  # after the module's own epoch-end logging
        if trainer.sanity_checking:
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is not None and math.isfinite(float(current)):
            current = float(current)
            if self.best is None or (current < self.best if self.mode == "min" else current > self.best):
                self.best, self.epoch = current, trainer.current_epoch
                self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.beat()

    def state_dict(self):
        return {"best": self.best, "metrics": self.metrics, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.best, self.metrics, self.epoch = state["best"], state["metrics"], state["epoch"]

    # --- the heartbeat -----------------------------------------------------------------------------
    def beat(self) -> None:
        last = self.ckpt_dir / "last.ckpt"
        resume = resume_command(self.overrides, last) if last.is_file() else None
        self.record.progress(self.metrics, self.epoch, resume)

    def on_train_epoch_end(self, trainer, pl_module):
        self.beat()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.time() - self.record.last_save > HEARTBEAT_S:
            self.beat()

    def on_exception(self, trainer, pl_module, exception):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.sigterm_checkpoint = self.ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(self.sigterm_checkpoint)
            self.beat()

    # --- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        from fastlight.training.checkpoints import tag

        tag(checkpoint, self.task, self.target, getattr(trainer.datamodule, "dims", None))
