"""What every task shares: optimizer and schedule from config, and the training step.

Tasks train on Lightning's automatic optimization, so everything a Lightning user expects holds
as Lightning defines it: `max_steps`, `gradient_clip_val`, `accumulate_grad_batches`, `precision`,
DDP, the per-step hooks. A task implements `training_loss(batch)`, `validation_step` and
`test_step`, and overrides `layer_groups()` when it has more than one (fastai's splitter).
The small in-memory tasks (MNIST, collab, tabular) add `fastlight.training.fast_path.FastPath`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from fastlight.errors import NonFiniteLossError
from fastlight.training.layer_groups import param_groups
from fastlight.training.optimizers import build_optimizer
from fastlight.training.schedules import build_schedule, total_optimizer_steps


class Task(L.LightningModule):
    def __init__(self, optim: dict, schedule: dict):
        super().__init__()
        self.optim = dict(optim)
        self.schedule = dict(schedule)

    # --- what a task provides -------------------------------------------------------------
    def training_loss(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def layer_groups(self) -> list[nn.Module]:
        """fastai's layer groups, earliest first; one group by default."""
        return [self]

    # --- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        loss = self.training_loss(batch)
        self.check_finite(loss.detach().reshape(1))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        """`max_steps` reached mid-epoch: validate before stopping, so the run ends with its metric.
        (Lightning would end such a run without validating; asking it to stop at the last step makes
        its loop run the validation it runs before any early stop.)"""
        if self.trainer.max_steps not in (None, -1) and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    def check_finite(self, losses: torch.Tensor, first_step: int | None = None) -> None:
        """Stop with one sentence at the first non-finite loss of `losses` (this call's steps)."""
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0])
        step = (self.global_step if first_step is None else first_step) + bad
        lr = self.trainer.optimizers[0].param_groups[-1]["lr"] if self.trainer.optimizers else float("nan")
        raise NonFiniteLossError(
            f"the training loss became {losses[bad].item()} at step {step} "
            f"(epoch {self.current_epoch}, lr {lr:.3g}); try a lower learning rate (optim.lr). "
            "Checkpoints and records written before this step are kept."
        )

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """bf16-mixed has no gradient scaler, so its gradients are the true ones and a fused optimizer's are
        clipped here directly (Lightning's mixed-precision plugin refuses any fused optimizer, for fp16's sake)."""
        if gradient_clip_val and str(self.trainer.precision) == "bf16-mixed" and optimizer.defaults.get("fused"):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        o = dict(self.optim)
        name, lr, wd = o.pop("name"), o.pop("lr"), o.pop("wd", 0.0)
        wd_bn_bias = o.pop("wd_bn_bias", False)
        if o.get("fused") and str(self.trainer.precision) == "16-mixed" and (self.trainer.gradient_clip_val or 0) > 0:
            # fp16's gradient scaler leaves a fused optimizer's gradients scaled until its own step, so they
            # cannot be clipped before it (Lightning refuses): clipped fp16 runs use the for-loop Adam.
            o["fused"] = False
        groups = param_groups(self.layer_groups(), lr, wd, wd_bn_bias)
        optimizer = build_optimizer(name, groups, lr=groups[-1]["lr"], wd=wd, **o)
        s = dict(self.schedule)
        scheduler = build_schedule(optimizer, s.pop("name"), total_steps=total_optimizer_steps(self.trainer), **s)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
