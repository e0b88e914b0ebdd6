"""What the verbs share: which task a run folder holds, read without torch, and "module:function" names."""

from __future__ import annotations

import importlib
import json
from pathlib import Path


def run_task(run_dir: str | Path) -> str:
    """The task of a run folder ("vision", "tabular", ...): summary.json's `task`, else config.yaml's."""
    from fastlight.errors import FastlightError

    run_dir = Path(run_dir)
    try:
        task = json.loads((run_dir / "summary.json").read_text()).get("task")
    except (OSError, ValueError):
        task = None
    if not task and (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        target = OmegaConf.load(run_dir / "config.yaml").get("task", {}).get("_target_", "")
        task = target.split(".")[-2] if target.startswith("fastlight.tasks.") else None
    if not task:
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no summary.json or config.yaml)")
    return task


def resolve(spec: str):
    """The function named by "package.module:function"."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
