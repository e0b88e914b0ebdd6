"""fastai's layer groups: one optimizer param group per group, with its own learning rate.

Learning rates are written as fastai writes them, spelled for the command line:
  lr=1e-3           every group gets 1e-3
  lr=[1e-3]         fastai's slice(1e-3): the last group 1e-3, every earlier group 1e-4
  lr=[1e-6,1e-4]    fastai's slice(1e-6, 1e-4): spread geometrically from the first group to the last
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastlight.errors import ConfigError

# Parameters of these layers get no weight decay by default (fastai's wd_bn_bias=False).
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def group_lrs(lr: float | Sequence[float], n_groups: int) -> list[float]:
    """Per-group learning rates from a number, `[hi]` (slice(hi)) or `[lo, hi]` (slice(lo, hi))."""
    if isinstance(lr, (int, float)):
        lrs = [float(lr)] * n_groups
    else:
        lr = [float(x) for x in lr]
        if len(lr) == 1:
            lrs = [lr[0] / 10] * (n_groups - 1) + [lr[0]]
        elif len(lr) == 2:
            lo, hi = lr
            if n_groups == 1:
                lrs = [hi]
            else:
                lrs = [lo * (hi / lo) ** (i / (n_groups - 1)) for i in range(n_groups)]
        else:
            raise ConfigError(f"lr={lr}: give a number, [hi] or [lo, hi]")
    if any(not x > 0 for x in lrs):
        raise ConfigError(f"lr={lr}: learning rates must be positive")
    return lrs


def is_no_decay(module: nn.Module, param_name: str) -> bool:
    return isinstance(module, NORM_TYPES) or param_name == "bias"


def param_groups(
    groups: Sequence[nn.Module], lr: float | Sequence[float], wd: float, wd_bn_bias: bool = False
) -> list[dict]:
    """Optimizer param groups for `groups` (fastai layer groups), in order.

    Each layer group becomes one param group, or two when BN/bias parameters are split off
    with weight_decay=0. Every group dict carries `lr`, `weight_decay` and `layer_group`
    (the index), so freezing and schedules can address layer groups by index.
    """
    lrs = group_lrs(lr, len(groups))
    out: list[dict] = []
    seen: set[int] = set()
    for i, (group, group_lr) in enumerate(zip(groups, lrs)):
        decay, no_decay = [], []
        for module in group.modules():
            for name, p in module.named_parameters(recurse=False):
                if id(p) in seen:  # tied weights (e.g. AWD-LSTM's decoder) belong to their first group
                    continue
                seen.add(id(p))
                (no_decay if not wd_bn_bias and is_no_decay(module, name) else decay).append(p)
        if decay:
            out.append({"params": decay, "lr": group_lr, "weight_decay": wd, "layer_group": i})
        if no_decay:
            out.append({"params": no_decay, "lr": group_lr, "weight_decay": 0.0, "layer_group": i})
    return out

