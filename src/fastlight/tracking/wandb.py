"""Weights & Biases setup: offline unless the user is logged in, the run living in the run folder."""

from __future__ import annotations

import os
from pathlib import Path


def wandb_mode(configured: str | None) -> str:
    """`logger.wandb.mode` if set, else `$WANDB_MODE`, else online when logged in, else offline."""
    if configured:
        return configured
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    import wandb

    # prompt=False: never ask for a key; verify=False: no network round trip.
    return "online" if wandb.login(prompt=False, verify=False) else "offline"


def make_wandb_logger(cfg: dict, run_dir: Path, config: dict, group: str | None, job_type: str, tags: list[str]):
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode(cfg.get("mode"))
    return WandbLogger(
        project=cfg.get("project", "fastlight"),
        entity=cfg.get("entity"),
        name=run_dir.name,
        save_dir=str(run_dir),
        group=group,
        job_type=job_type,
        tags=list(tags),
        config=config,
        mode=mode,
        log_model=False,  # checkpoints stay in the run folder; uploading them is the user's choice
    )


def finish(exit_code: int = 0) -> str | None:
    """Close the W&B run (always, even after a failure); returns the offline folder to sync, if any."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None or wandb.run is None:
        return None
    offline = wandb.run.settings.mode == "offline" or bool(getattr(wandb.run, "offline", False))
    run_dir = Path(wandb.run.dir).parent if offline else None
    wandb.finish(exit_code=exit_code)
    return str(run_dir) if run_dir else None
