"""The final fit on all the data (the course's Kaggle trick): `data.final_fit=true`, any task.

Once the recipe is chosen, train on the training and validation data together: the validation
rows join the training set, no validation runs, the test set (where the task has one) gives the
run's metric, and `summary.json` says `final_fit: true` so `compare` shows such runs apart.
`data.final_fit` is a key of every data config (conf/config.yaml) that the run reads and takes
out before the data module is built (`data_kwargs`).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from fastlight.errors import ConfigError


def data_kwargs(cfg: DictConfig) -> DictConfig:
    """The data node without the run-level `final_fit` key, ready for `instantiate`."""
    node = OmegaConf.to_container(cfg.data, resolve=True)
    node.pop("final_fit", None)
    return OmegaConf.create(node)


def merge_valid_into_train(datamodule) -> dict:
    """Move the validation set into the training set; returns the counts, for the run record."""
    own = getattr(datamodule, "merge_valid_into_train", None)
    if own is not None:  # a data module with its own way of doing it
        return own()
    tr, va = getattr(datamodule, "train", None), getattr(datamodule, "valid", None)
    if isinstance(tr, tuple) and isinstance(va, tuple):  # in-memory tensors (TensorBatches)
        datamodule.train = tuple(torch.cat([a, b]) for a, b in zip(tr, va))
        return {"train_rows": len(tr[0]), "valid_rows": len(va[0]), "final_train_rows": len(datamodule.train[0])}
    tr, va = getattr(datamodule, "train_ds", None), getattr(datamodule, "valid_ds", None)
    if hasattr(tr, "items") and hasattr(va, "items"):  # item lists (images): train transforms apply to all
        n_train, n_valid = len(tr.items), len(va.items)
        tr.items = list(tr.items) + list(va.items)
        return {"train_rows": n_train, "valid_rows": n_valid, "final_train_rows": len(tr.items)}
    raise ConfigError(f"data.final_fit=true: {type(datamodule).__name__} can't move its validation set into training")


def test_metric_name(name: str) -> str:
    """val/<metric> -> test/<metric>: where a final fit's optimized metric comes from."""
    return "test/" + name.split("/", 1)[1] if name.startswith("val/") else name
