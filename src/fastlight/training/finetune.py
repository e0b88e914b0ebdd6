"""Staged training in one run: fastai's `freeze` / `unfreeze` / `fine_tune`, as a Lightning callback.

fastai fine-tunes a pretrained model in stages, each one a `fit_one_cycle` of its own:

    learn.freeze();   learn.fit_one_cycle(4, 3e-3)                  # the new head (and BN) only
    learn.unfreeze(); learn.fit_one_cycle(2, slice(1e-6, 1e-4))     # everything, lower lrs early

Here that is a list of `Stage`s run by one `Trainer.fit`. The optimizer holds every layer group
from the start (one param group each, see `layer_groups.param_groups`), so a stage boundary only
changes which groups get gradients, the groups' learning rates and the schedule: each stage runs
its own one-cycle over its own steps, with each group's own max lr. As `Learner.freeze_to` does,
the optimizer's state (Adam's moments) is cleared when the frozen groups change.

`StagedTraining` is a Lightning `BaseFinetuning` callback: `freeze_before_training` freezes for
the first stage before the optimizer is built, `finetune_function` runs at every epoch start.
Unlike BaseFinetuning's usual pattern it adds no param groups (every group is there from the
start), so it keeps nothing to restore; a run resumed with `ckpt_path` continues the stage it
was in, because the scheduler and the optimizer's groups come back from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightning.pytorch.callbacks import BaseFinetuning

from fastlight.errors import ConfigError
from fastlight.training.layer_groups import freeze_to, group_lrs, set_lrs
from fastlight.training.schedules import OneCycle, build_schedule, optimizer_steps_per_epoch

SCHEDULE_KEYS = ("pct_start", "div", "div_final")


@dataclass(frozen=True)
class Stage:
    """One `fit_one_cycle` of a staged run.

    epochs     how many epochs this stage trains
    lr         a number, [hi] (fastai's slice(hi)) or [lo, hi] (slice(lo, hi))
    freeze_to  fastai's freeze_to(n): layer groups [:n] frozen; -1 = freeze(), 0 = unfreeze()
    size       image size for this stage (progressive resizing), or None to keep the data's
    pct_start, div, div_final  this stage's one-cycle, where it differs from the run's schedule
    """

    epochs: int
    lr: float | tuple[float, ...]
    freeze_to: int = 0
    size: int | None = None
    pct_start: float | None = None
    div: float | None = None
    div_final: float | None = None

    def schedule(self, base: dict) -> dict:
        """The run's schedule config with this stage's overrides."""
        return {**base, **{k: getattr(self, k) for k in SCHEDULE_KEYS if getattr(self, k) is not None}}


def fine_tune(
    epochs: int, base_lr: float, freeze_epochs: int = 1, lr_mult: float = 100, pct_start: float = 0.3, div: float = 5.0
) -> list[Stage]:
    """fastai's `fine_tune(epochs, base_lr, freeze_epochs)` as two stages.

    Frozen for `freeze_epochs` at slice(base_lr) (warm-up over 99% of the stage), then unfrozen
    for `epochs` at slice(base_lr/2/lr_mult, base_lr/2).
    """
    if isinstance(base_lr, (list, tuple)) or not isinstance(base_lr, (int, float)):
        raise ConfigError(f"optim.lr={base_lr}: fine_tune takes one base learning rate (a number)")
    half = base_lr / 2
    stages = [Stage(freeze_epochs, (base_lr,), freeze_to=-1, pct_start=0.99),
              Stage(epochs, (half / lr_mult, half), freeze_to=0, pct_start=pct_start, div=div)]
    return [s for s in stages if s.epochs > 0]


def parse_stages(stages: Sequence[dict]) -> list[Stage]:
    """Stages from config (a list of dicts), with one clear sentence for a bad entry."""
    out = []
    allowed = set(Stage.__dataclass_fields__)
    for i, raw in enumerate(stages):
        raw = dict(raw)
        unknown = set(raw) - allowed
        if unknown or "epochs" not in raw or "lr" not in raw:
            raise ConfigError(
                f"task.stages[{i}]={raw}: each stage needs epochs and lr and may set "
                f"{', '.join(sorted(allowed - {'epochs', 'lr'}))}"
                + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
            )
        if not isinstance(raw["epochs"], int) or raw["epochs"] < 1:
            raise ConfigError(f"task.stages[{i}].epochs={raw['epochs']} must be a positive integer")
        lr = raw["lr"]
        raw["lr"] = tuple(float(x) for x in lr) if isinstance(lr, Sequence) and not isinstance(lr, str) else float(lr)
        group_lrs(raw["lr"], 2)  # validates the spelling
        out.append(Stage(**raw))
    if not out:
        raise ConfigError("task.stages is empty; give at least one stage or null")
    return out


class StagedTraining(BaseFinetuning):
    """Run `stages` one after another in one fit; the stages' epochs are the run's epochs."""

    def __init__(self, stages: Sequence[Stage], train_bn: bool = True):
        super().__init__()
        self.stages = list(stages)
        self.train_bn = train_bn
        self.starts = [sum(s.epochs for s in self.stages[:i]) for i in range(len(self.stages))]

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_at(self, epoch: int) -> int:
        """Index of the stage that trains epoch `epoch` (the last one past the end)."""
        return max(i for i, start in enumerate(self.starts) if start <= epoch)

    # --- Lightning hooks ------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return  # validating or testing: nothing to freeze or schedule
        trainer.fit_loop.max_epochs = self.total_epochs  # before anything counts steps
        self._set_size(trainer, self.stages[0])  # loaders may be built before the first epoch starts
        super().setup(trainer, pl_module, stage)  # -> freeze_before_training

    def freeze_before_training(self, pl_module) -> None:
        freeze_to(pl_module.layer_groups(), self.stages[0].freeze_to, self.train_bn)

    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        # A resumed run starts mid-way: its first loader must already have that stage's size.
        self._set_size(trainer, self.stages[self.stage_at(trainer.current_epoch)])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        # BaseFinetuning would also record added param groups here; there are none to record.
        self.finetune_function(pl_module, trainer.current_epoch, trainer.optimizers[0])

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        i = self.stage_at(epoch)
        stage = self.stages[i]
        freeze_to(pl_module.layer_groups(), stage.freeze_to, self.train_bn)  # also right after a resume
        if epoch != self.starts[i]:
            return
        trainer = pl_module.trainer
        configs = trainer.lr_scheduler_configs
        if configs and not isinstance(configs[0].scheduler, OneCycle):
            return  # another tool drives the lr (Lightning's lr finder): leave it alone
        if i > 0 and stage.freeze_to != self.stages[i - 1].freeze_to:
            optimizer.state.clear()  # fastai's freeze_to() clears the optimizer state too
        set_lrs(optimizer, stage.lr)
        self._set_size(trainer, stage)
        if configs:
            schedule = stage.schedule(pl_module.schedule)
            steps = stage.epochs * optimizer_steps_per_epoch(trainer)
            configs[0].scheduler = build_schedule(optimizer, schedule.pop("name"), total_steps=steps, **schedule)

    # --- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _set_size(trainer, stage: Stage) -> None:
        if stage.size is None:
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_size"):
            raise ConfigError(f"a stage sets size={stage.size} but this data has no image size to change")
        datamodule.set_size(stage.size)
