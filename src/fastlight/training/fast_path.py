"""The fast path for small in-memory tasks: several optimizer steps per Lightning `training_step`.

Why: for the course's small models (MNIST's MLP, collab's dot product, tabular) Lightning's own
Python per training step costs as much as the model. `TensorBatches` hands a `Chunk` of K batches
to one `training_step`, which runs K optimizer steps through Lightning's public manual
optimization (`manual_backward` + `optimizer.step()`), so that cost is paid once per K steps.

What it keeps, and how (the consequences are owned here, in plain sight):
- one meaning of "step": every `optimizer.step()` advances `trainer.global_step`; `max_steps`
  cuts a chunk short; the loggers' x-axis (`metrics.csv`'s step, W&B's) is `global_step`, sent as
  Lightning's documented `step` metric; `StepProgressBar` counts optimizer steps;
- the per-step hooks: `on_before_backward`, `on_after_backward` and `on_before_optimizer_step`
  fire once per optimizer step on every callback (they come with manual_backward and step);
- precision plugins: the chunk runs inside Lightning's autocast context and `manual_backward`;
- the Trainer keys that count batches (`log_every_n_steps`, an integer `val_check_interval`,
  an integer `limit_train_batches`) are given in optimizer steps and handed to Lightning in
  chunks: `plan` picks K as a divisor of each so the translation is exact.
When the run asks for something the fast path does not do itself, K is 1 and the task trains on
Lightning's automatic optimization, one batch per step, exactly as any other task:
gradient clipping, gradient accumulation, several devices (DDP), `fast_dev_run`, the lr finder.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, TQDMProgressBar

from fastlight.data.core import Chunk
from fastlight.training.schedules import optimizer_steps_per_epoch

COUNTED_IN_STEPS = ("log_every_n_steps", "val_check_interval", "limit_train_batches")


def needs_lightnings_loop(trainer_kwargs: dict, lr_find: bool = False) -> bool:
    """Whether the run asks for what the fast path does not do itself (see the module docstring)."""
    t = trainer_kwargs
    return bool(
        t.get("gradient_clip_val")
        or (t.get("accumulate_grad_batches") or 1) != 1
        or t.get("fast_dev_run")
        or str(t.get("devices", 1)) not in ("1", "[0]")
        or (t.get("num_nodes") or 1) != 1
        or str(t.get("strategy") or "auto") != "auto"
        or lr_find
    )


def plan(trainer_kwargs: dict, datamodule, task, lr_find: bool = False) -> dict:
    """Choose K (optimizer steps per Lightning call) for this run; return the Trainer's kwargs.

    Sets `datamodule.steps_per_call` and, for a `FastPath` task, `task.automatic_optimization` to match.
    """
    kwargs = dict(trainer_kwargs)
    counted = {key: v for key in COUNTED_IN_STEPS
               if isinstance(v := kwargs.get(key), int) and not isinstance(v, bool) and v > 0}
    k = int(getattr(datamodule, "steps_per_call", 1) or 1)
    if not isinstance(task, FastPath) or needs_lightnings_loop(kwargs, lr_find):
        k = 1
    for v in counted.values():
        k = math.gcd(k, v)  # so each count translates exactly into Lightning calls
    if hasattr(datamodule, "steps_per_call"):
        datamodule.steps_per_call = k
    if isinstance(task, FastPath):  # other tasks keep their own choice (a GAN's manual optimization)
        task.automatic_optimization = k == 1
    kwargs.update({key: v // k for key, v in counted.items()})
    return kwargs


class FastPath:
    """Mixin for a `Task` whose data module serves `TensorBatches`: runs a `Chunk` per call."""

    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        opt = self.optimizers()
        sched = self.lr_schedulers()
        max_steps = self.trainer.max_steps
        first_step = self.global_step
        losses = []
        for b in batch if isinstance(batch, Chunk) else [batch]:
            if max_steps not in (None, -1) and self.global_step >= max_steps:
                break
            loss = self.training_loss(b)
            opt.optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
        losses = torch.stack(losses)
        self.check_finite(losses, first_step)  # one sync per chunk, not per step
        mean = losses.mean()
        self.log("train/loss", mean, prog_bar=True)
        self.log_step_axis()
        for name, lr in learning_rates(opt).items():
            self.log(name, lr)
        return mean

    def log_step_axis(self) -> None:
        """Loggers take `step` as their x-axis: optimizer steps, not Lightning calls. As in
        Lightning's own rows, a row's step is the index of the last optimizer step before it."""
        if not self.automatic_optimization:
            self.log("step", max(self.global_step - 1, 0))
            self.log("epoch", self.current_epoch)

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.log_step_axis()

    def on_test_epoch_end(self):
        self.log_step_axis()


def learning_rates(optimizer) -> dict[str, float]:
    """Each param group's lr under LearningRateMonitor's names (`lr-AdamW`, `lr-AdamW/group1`)."""
    opt = getattr(optimizer, "optimizer", optimizer)
    base = f"lr-{type(opt).__name__}"
    groups = opt.param_groups
    if len(groups) == 1 and "name" not in groups[0]:
        return {base: groups[0]["lr"]}
    return {f"{base}/{g.get('name', f'pg{i + 1}')}": g["lr"] for i, g in enumerate(groups)}


def with_fast_path_callbacks(callbacks: list, task) -> list:
    """On the fast path the task logs learning rates itself, on the optimizer-step axis (Lightning's
    LearningRateMonitor would log on the call axis); on every path a mid-epoch resume needs the loader's place."""
    if not task.automatic_optimization:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return [*callbacks, ResumeMidEpoch()]


class ResumeMidEpoch(Callback):
    """A resume from a mid-epoch checkpoint continues with the batches an unbroken run would see.

    `TensorBatches` and `EpochLoader` record their position (`state_dict`); Lightning builds the training
    loader before it restores a checkpoint, so this hands the saved position to the loader when training
    starts (a loader without `load_state_dict` restarts its epoch). Lightning keeps no random state, so
    the global generators (dropout's) are saved with the checkpoint and set again there too."""

    def __init__(self):
        self.state, self.rng = None, None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        kind, keys, pos, has_gauss, gauss = np.random.get_state()  # as plain types: checkpoints load weights_only
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                                    "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                              int(has_gauss), float(gauss)),
                                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        self.state = states[0] if states else None
        self.rng = checkpoint.get("rng_states")

    def on_train_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        if self.state and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self.state)
        if self.rng:
            torch.set_rng_state(self.rng["torch"])
            kind, keys, pos, has_gauss, gauss = self.rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(self.rng["python"])
            if self.rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self.rng["cuda"])
        self.state, self.rng = None, None


class StepProgressBar(TQDMProgressBar):
    """Lightning's progress bar, counting optimizer steps (on the fast path too, and with gradient
    accumulation) instead of `training_step` calls; it redraws every `refresh_rate` steps."""

    @property
    def total_train_batches(self):
        if math.isinf(self.trainer.num_training_batches):
            return self.trainer.num_training_batches
        return optimizer_steps_per_epoch(self.trainer)

    def on_train_epoch_start(self, trainer, *args):
        super().on_train_epoch_start(trainer, *args)
        self.epoch_start_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        n = trainer.global_step - self.epoch_start_step
        total = bar.total or math.inf
        if not bar.disable and (n - bar.n >= self.refresh_rate or n >= total):
            bar.n = n
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))
