"""Learning-rate schedules: constant, and fastai's one-cycle, stepped once per optimizer step.

One-cycle (fastai v2 `fit_one_cycle` defaults): cosine warm-up from lr_max/div to lr_max over
`pct_start` of all steps, then cosine anneal to lr_max/div_final, while momentum (or Adam's
beta1) goes the other way, moms[0] -> moms[1] -> moms[2]. Every param group keeps its own
lr_max, which is how discriminative learning rates survive the schedule.

Written out rather than torch's `OneCycleLR` because fastai's `ParamScheduler` evaluates the
schedule at position = iteration / total (iteration 0 at lr_max/div), where OneCycleLR is one step
later, and because OneCycleLR raises when stepped past its end (max_steps, a resume, a stage
change); here the position stops at 1 and the lr stays at lr_max/div_final.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from fastlight.errors import ConfigError


def uses_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """Whether cycling momentum means anything for this optimizer (plain SGD has none)."""
    group = optimizer.param_groups[0]
    return "betas" in group or group.get("momentum", 0) > 0


def sched_cos(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: cosine from `start` (pos 0) to `end` (pos 1)."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def one_cycle_at(pos: float, lr_max: float, pct_start: float, div: float, div_final: float, moms) -> tuple[float, float]:
    """(lr, momentum) of fastai's one-cycle at `pos` in [0, 1]."""
    if pos < pct_start:
        p = pos / pct_start
        return sched_cos(lr_max / div, lr_max, p), sched_cos(moms[0], moms[1], p)
    p = (pos - pct_start) / (1 - pct_start)
    return sched_cos(lr_max, lr_max / div_final, p), sched_cos(moms[1], moms[2], p)


class OneCycle(LRScheduler):
    """fastai's one-cycle over `total_steps` optimizer steps; each group's lr at build time is its lr_max."""

    def __init__(self, optimizer, total_steps: int, pct_start: float = 0.25, div: float = 25.0,
                 div_final: float = 1e5, moms=(0.95, 0.85, 0.95), cycle_momentum: bool = True):
        self.total_steps = max(int(total_steps), 1)
        self.pct_start, self.div, self.div_final = float(pct_start), float(div), float(div_final)
        self.moms = tuple(float(m) for m in moms)
        self.cycle_momentum = cycle_momentum
        self.max_lrs = [g["lr"] for g in optimizer.param_groups]
        super().__init__(optimizer)  # steps once: iteration 0 gets position 0

    @property
    def position(self) -> float:
        return min(self.last_epoch / self.total_steps, 1.0)

    def get_lr(self) -> list[float]:
        pos = self.position
        lrs = []
        for group, lr_max in zip(self.optimizer.param_groups, self.max_lrs):
            lr, mom = one_cycle_at(pos, lr_max, self.pct_start, self.div, self.div_final, self.moms)
            if self.cycle_momentum:
                if "betas" in group:
                    group["betas"] = (mom, *group["betas"][1:])
                else:
                    group["momentum"] = mom
            lrs.append(lr)
        return lrs


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
    return OneCycle(optimizer, total_steps, pct_start, div, div_final, moms, cycle_momentum=uses_momentum(optimizer))


def optimizer_steps_per_epoch(trainer) -> int:
    """Optimizer steps in one training epoch on this rank (what a stage's one-cycle spans per epoch).

    Counts the fast path's steps inside chunks, `limit_train_batches` and gradient accumulation
    (Lightning steps once more at an epoch's end when the batches don't divide evenly).
    """
    loader = trainer.train_dataloader
    per_call = getattr(loader, "steps_per_call", 1) if not trainer.lightning_module.automatic_optimization else 1
    calls = trainer.num_training_batches
    if per_call > 1:
        return min(int(calls * per_call), loader.n_batches)
    return math.ceil(calls / trainer.accumulate_grad_batches)


def total_optimizer_steps(trainer) -> int:
    """Optimizer steps in the whole fit: what one-cycle spans (max_steps caps it)."""
    steps = trainer.estimated_stepping_batches  # also sets up the training loader, if not yet
    if not trainer.lightning_module.automatic_optimization:  # the fast path: steps inside chunks
        max_steps = trainer.max_steps if trainer.max_steps not in (None, -1) else math.inf
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        steps = max_steps if math.isinf(epochs) else min(optimizer_steps_per_epoch(trainer) * epochs, max_steps)
    if not math.isfinite(steps):
        raise ConfigError("the schedule needs a length: set trainer.max_epochs or trainer.max_steps "
                          "(or schedule=constant)")
    return max(int(steps), 1)
