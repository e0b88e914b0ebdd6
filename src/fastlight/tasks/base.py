"""What every task shares: optimizer and schedule from config, and a lean training step.

Training uses Lightning's manual optimization so one `training_step` can run a *chunk* of
several optimizer steps (see `fastlight.data.core.TensorBatches`): for the small models of the
course, Lightning's per-step bookkeeping otherwise costs more than the model. A loader that
yields plain batches (images through a DataLoader) gets exactly one step per call.

A task implements `training_loss(batch)`, `validation_step` and `test_step`, and overrides
`layer_groups()` when it has more than one (fastai's splitter).
"""

from __future__ import annotations

import math
import lightning as L
import torch
from torch import nn

from fastlight.data.core import Chunk
from fastlight.errors import NonFiniteLossError
from fastlight.training.layer_groups import param_groups
from fastlight.training.optimizers import build_optimizer
from fastlight.training.schedules import build_schedule


class Task(L.LightningModule):
    def __init__(self, optim: dict, schedule: dict, clip: float | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.optim = dict(optim)
        self.schedule = dict(schedule)
        self.clip = clip

    # --- what a task provides -------------------------------------------------------------
    def training_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def layer_groups(self) -> list[nn.Module]:
        """fastai's layer groups, earliest first; one group by default."""
        return [self]

    # --- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:  # Lightning's lr finder drives the steps itself
            loss = self.training_loss(batch)
            self.log("train/loss", loss, prog_bar=True)
            return loss
        batches = batch if isinstance(batch, Chunk) else [batch]
        opt = self.optimizers()
        sched = self.lr_schedulers()
        first_step = self.global_step
        # Lightning's per-step machinery (precision plugin, on_before_backward/on_after_backward/
        # on_before_optimizer_step on every callback) costs ~80 us, a fifth of a small step; it runs
        # on a chunk's last step only. The earlier steps call torch directly, which changes nothing
        # in 32-bit precision without clipping; _on_before/_after_step keep global_step exact.
        lean = self.trainer.precision == "32-true" and not self.clip
        losses = []
        for k, b in enumerate(batches):
            loss = self.training_loss(b)
            if lean and k < len(batches) - 1:
                opt.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                opt._on_before_step()
                opt.optimizer.step()
                opt._on_after_step()
            else:
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if self.clip:
                    self.clip_gradients(opt, gradient_clip_val=self.clip, gradient_clip_algorithm="norm")
                opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.detach())
        losses = torch.stack(losses)
        finite = torch.isfinite(losses)
        if not bool(finite.all()):  # one sync per chunk, not per step
            bad = int((~finite).nonzero()[0])
            lr = opt.param_groups[-1]["lr"]
            raise NonFiniteLossError(
                f"the training loss became {losses[bad].item()} at step {first_step + bad} "
                f"(epoch {self.current_epoch}, lr {lr:.3g}); try a lower learning rate (optim.lr). "
                "Checkpoints and records written before this step are kept."
            )
        mean = losses.mean()
        self.log("train/loss", mean, prog_bar=True, batch_size=len(batches))
        return mean

    def configure_optimizers(self):
        o = dict(self.optim)
        name, lr, wd = o.pop("name"), o.pop("lr"), o.pop("wd", 0.0)
        wd_bn_bias = o.pop("wd_bn_bias", False)
        groups = param_groups(self.layer_groups(), lr, wd, wd_bn_bias)
        optimizer = build_optimizer(name, groups, lr=groups[-1]["lr"], wd=wd, **o)
        s = dict(self.schedule)
        scheduler = build_schedule(optimizer, s.pop("name"), total_steps=self.total_optimizer_steps(), **s)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def total_optimizer_steps(self) -> int:
        """Optimizer steps in the whole fit (what one-cycle spans), counting steps inside chunks.

        Never underestimates: torch's OneCycleLR refuses to step past its end.
        """
        calls = self.trainer.estimated_stepping_batches  # training_step calls
        loader = self.trainer.train_dataloader
        if not math.isfinite(calls):
            return 1_000_000
        steps = int(calls * getattr(loader, "steps_per_call", 1))
        n_batches = getattr(loader, "n_batches", None)  # exact when whole epochs run
        if n_batches is not None and self.trainer.max_epochs and self.trainer.max_epochs > 0:
            steps = min(steps, n_batches * self.trainer.max_epochs)
        return steps
