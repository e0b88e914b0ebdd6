"""Checking a checkpoint before a run resumes from it: one sentence per way it can be wrong.

A run started with `ckpt_path=...` must not load data, build loggers or touch any file before it
knows the checkpoint is usable: missing, empty, truncated, not a checkpoint, another task's, or
another model shape each stop the run with one sentence naming the file (exit 2).
Checkpoints are tagged with the task that wrote them (`tag`, from the run's recorder), which is how "another
task" is recognised; the parameter names and shapes tell "another model shape".
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import lightning as L
import torch

from fastlight.errors import FastlightError

TAG = "fastlight"


class CheckpointError(FastlightError):
    """A checkpoint that can't be resumed from."""


def check_checkpoint(path: str | Path, task_target: str) -> dict:
    """Load `path` on the CPU and check it is a Lightning checkpoint of this task; returns it."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"ckpt_path={p}: no such file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"ckpt_path={p}: the file is empty")
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"ckpt_path={p}: not a checkpoint (truncated, or not written by torch.save)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged archive: torch's own message is long and says nothing useful
        raise CheckpointError(f"ckpt_path={p}: the checkpoint is damaged and can't be read ({type(e).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"ckpt_path={p}: not a Lightning checkpoint (no state_dict)")
    tag = state.get(TAG, {})
    if tag.get("target") not in (None, task_target):
        raise CheckpointError(
            f"ckpt_path={p}: written by task={tag.get('task')} ({tag.get('target')}), not by this run's task")
    return state


def weight_shapes(state: dict) -> dict[str, tuple]:
    """A checkpoint's weights' names and shapes: what `check_checkpoint_fits` needs, without holding
    the whole checkpoint (optimizer states included) in memory while the run trains."""
    return {k: tuple(v.shape) for k, v in state["state_dict"].items()}


def check_checkpoint_fits(path: str | Path, have: dict[str, tuple], task: L.LightningModule) -> None:
    """The checkpoint's weights (`weight_shapes`) have this model's names and shapes."""
    want = {k: tuple(v.shape) for k, v in task.state_dict().items()}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or unexpected or wrong:
        what = (f"{wrong[0]} is {have[wrong[0]]} there but {want[wrong[0]]} here" if wrong
                else f"{len(missing)} weights missing, {len(unexpected)} unexpected")
        raise CheckpointError(f"ckpt_path={path}: the checkpoint is for another model shape ({what})")


def tag(checkpoint: dict, task: str, target: str, dims: dict | None) -> None:
    """Write into a checkpoint which task made it (so a resume can check it) and the sizes the model
    was built with (`datamodule.dims`, so `load_run` can rebuild it without the data)."""
    checkpoint[TAG] = {"task": task, "target": target, "dims": dict(dims) if dims else None}
