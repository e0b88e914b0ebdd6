"""Rebuilding a finished run from its folder: the one way every command on a trained model starts."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import OmegaConf, open_dict

from fastlight.errors import FastlightError


def load_run(run_dir: str | Path, ckpt: str = "best", setup_data: bool = True):
    """Rebuild a finished run from its folder: (config, datamodule, task with `ckpt` weights loaded).

    For commands that work on a trained model (`recommend`, `predict`, `restore`, ...). `ckpt` is
    "best", "last" or a path. With `setup_data` the data module is set up again from the same
    config (same seed, same split); without it the model is built from the sizes the checkpoint
    recorded (`dims`), so the run folder alone suffices, with no dataset on the machine. A model
    built on pretrained weights is built without them (no download): the checkpoint has them all.
    """
    from fastlight.training.checkpoints import check_checkpoint
    from fastlight.training.final_fit import data_kwargs

    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(config_file)
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the run finish an epoch?")
    state = check_checkpoint(path, cfg.task._target_)
    with open_dict(cfg):  # the checkpoint holds every weight: build the model without fetching any
        if cfg.model.get("pretrained") is True:
            cfg.model.pretrained = False
            if "weights_path" in cfg.model:
                cfg.model.weights_path = None
    datamodule = hydra.utils.instantiate(data_kwargs(cfg))
    dims = state.get("fastlight", {}).get("dims")
    if setup_data or dims is None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        dims = datamodule.dims
    model = hydra.utils.instantiate(cfg.model, **dims)
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    task.on_load_checkpoint(state)  # lets a task restore what it saved beside the weights
    task.load_state_dict(state["state_dict"])
    task.eval()
    return cfg, datamodule, task
