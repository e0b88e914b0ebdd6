"""Learning-rate schedules: constant, and fastai's one-cycle through torch's `OneCycleLR`.

One-cycle (fastai v2 `fit_one_cycle` defaults): cosine warm-up from lr_max/div to lr_max over
`pct_start` of all steps, then cosine anneal to lr_max/div_final, while momentum (or Adam's
beta1) cycles the other way, moms[0] -> moms[1] -> moms[2]. Every param group keeps its own
lr_max, which is how discriminative learning rates survive the schedule.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import OneCycleLR

from fastlight.errors import ConfigError


def uses_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether cycling momentum means anything for this optimizer (plain SGD has none)."""
    group = optimizer.param_groups[0]
    return "betas" in group or group.get("momentum", 0) > 0


def build_schedule(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    pct_start: float = 0.25,
    div: float = 25.0,
    div_final: float = 1e5,
    moms: tuple[float, float, float] = (0.95, 0.85, 0.95),
):
    """A per-step scheduler, or None for a constant learning rate."""
    if name == "constant":
        return None
    if name != "one_cycle":
        raise ConfigError(f"schedule.name={name!r} is unknown; choose one of: constant, one_cycle")
    if not 0 < pct_start < 1:
        raise ConfigError(f"schedule.pct_start={pct_start} must be between 0 and 1")
    max_lrs = [g["lr"] for g in optimizer.param_groups]
    cycle = uses_momentum(optimizer)
    total_steps = max(int(total_steps), 2)
    if pct_start * total_steps == 1:  # torch's warm-up would end at step 0 and divide by zero
        total_steps += 1
    return OneCycleLR(
        optimizer,
        max_lr=max_lrs,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=cycle,
        # torch reaches moms[0] again at the end by construction (two-phase cycle).
        max_momentum=moms[0],
        base_momentum=moms[1],
        div_factor=div,
        final_div_factor=div_final / div,  # torch divides the *initial* lr; fastai divides lr_max
        three_phase=False,
    )

