"""Rebuilding a finished run from its folder: the one way every command on a trained model starts."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import OmegaConf

from fastlight.errors import FastlightError


def load_run(run_dir: str | Path, ckpt: str = "best", setup_data: bool = True):
    """Rebuild a finished run from its folder: (config, datamodule, task with `ckpt` weights loaded).

    For commands that work on a trained model (`recommend`, `predict`). `ckpt` is "best", "last"
    or a path. The data module is set up again from the same config (same seed, same split).
    """
    import torch

    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(config_file)
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the run finish an epoch?")
    datamodule = hydra.utils.instantiate(cfg.data)
    if setup_data:
        datamodule.prepare_data()
        datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model, **datamodule.dims)
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    state = torch.load(path, map_location="cpu", weights_only=False)
    task.on_load_checkpoint(state)  # lets a task restore what it saved beside the weights
    task.load_state_dict(state["state_dict"])
    task.eval()
    return cfg, datamodule, task
