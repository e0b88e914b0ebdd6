"""fastai's layer groups: one optimizer param group per group, with its own learning rate.

Learning rates are written as fastai writes them, spelled for the command line:
  lr=1e-3           every group gets 1e-3
  lr=[1e-3]         fastai's slice(1e-3): the last group 1e-3, every earlier group 1e-4
  lr=[1e-6,1e-4]    fastai's slice(1e-6, 1e-4): spread geometrically from the first group to the last

Freezing is fastai's too: `freeze_to(groups, n)` stops gradients to the groups before `n`
(`freeze()` is n=-1: only the last group, the head, trains; `unfreeze()` is n=0). Their norm
layers keep training unless train_bn=False. A frozen parameter has no gradient, so no optimizer
here touches it: torch's AdamW and the hand-written ones skip parameters whose grad is None,
weight decay included.
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
    with weight_decay=0. Every group dict carries `lr`, `weight_decay`, `layer_group` (the
    index), so freezing and schedules can address layer groups by index, and `name`
    (`group<i>`, `group<i>-no_wd`), which Lightning's LearningRateMonitor uses for its columns.
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
            out.append({"params": decay, "lr": group_lr, "weight_decay": wd, "layer_group": i, "name": f"group{i}"})
        if no_decay:
            out.append(
                {"params": no_decay, "lr": group_lr, "weight_decay": 0.0, "layer_group": i, "name": f"group{i}-no_wd"}
            )
    return out


def set_lrs(optimizer: torch.optim.Optimizer, lr: float | Sequence[float]) -> list[float]:
    """Give every param group its layer group's lr from a number, `[hi]` or `[lo, hi]`."""
    n_groups = 1 + max(g.get("layer_group", 0) for g in optimizer.param_groups)
    lrs = group_lrs(lr, n_groups)
    for g in optimizer.param_groups:
        g["lr"] = lrs[g.get("layer_group", 0)]
    return lrs


def freeze_to(groups: Sequence[nn.Module], n: int, train_bn: bool = True) -> None:
    """fastai's `freeze_to(n)`: layer groups `[:n]` get no gradient, groups `[n:]` train.

    With `train_bn` the norm layers of frozen groups keep training (fastai's default): their
    few parameters adapt a pretrained body to the new data's statistics.
    """
    n_frozen = n if n >= 0 else len(groups) + n
    if not 0 <= n_frozen < len(groups):
        raise ConfigError(f"freeze_to={n} would freeze all {len(groups)} layer groups; use a value from "
                          f"{-(len(groups) - 1)} to {len(groups) - 1} (-1: freeze the body, 0: unfreeze)")
    for i, group in enumerate(groups):
        for module in group.modules():
            trainable = i >= n_frozen or (train_bn and isinstance(module, NORM_TYPES))
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)


def freeze(groups: Sequence[nn.Module], train_bn: bool = True) -> None:
    """Train only the last layer group (and, with train_bn, every norm layer)."""
    freeze_to(groups, -1, train_bn)


def unfreeze(groups: Sequence[nn.Module]) -> None:
    freeze_to(groups, 0)

