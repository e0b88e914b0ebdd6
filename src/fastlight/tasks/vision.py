"""Vision fine-tuning, fast.ai lessons 1-3: a pretrained ResNet with fastai's head, trained in stages.

The recipe (lesson 1, Pets): the new head learns first while the pretrained body is frozen (its
BatchNorm layers still adapt), then everything trains with discriminative learning rates: early
layers, which already see edges and textures, move less than the late ones. fastai's
`fine_tune(epochs, base_lr)` is the default here: one frozen epoch at slice(base_lr), then
`trainer.max_epochs` unfrozen epochs at slice(base_lr/200, base_lr/2), each stage its own one-cycle.
Any other sequence is a list of stages in config (see `fastlight.training.finetune`).

The same body and head serve the lessons' three problem types (`data.problem`):
  single_label  cross-entropy; error_rate                            (Pets, any ImageFolder)
  multi_label   BCE with logits; accuracy_multi and F-beta(2) at `thresh`   (planet)
  regression    MSE, with the model's `y_range` squashing outputs     (head-pose points)
After training, `summarize` saves fastai's interpretation (top losses, confusion matrix, most
confused pairs; `fastlight.interpret.vision`) in the run folder and logs it to W&B. A finished run:
`fastlight predict <run> <images folder>`, `fastlight clean <run>` (fastai's ImageCleaner).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError
from fastlight.tasks.base import Task
from fastlight.training.finetune import StagedTraining, fine_tune, parse_stages

PROBLEMS = ("single_label", "multi_label", "regression")


def fbeta_multi(probs: torch.Tensor, y: torch.Tensor, thresh: float, beta: float = 2.0, eps: float = 1e-9):
    """F-beta per image, averaged over images (fastai/sklearn average='samples'), as the planet lesson."""
    pred = (probs > thresh).float()
    tp = (pred * y).sum(1)
    precision, recall = tp / (pred.sum(1) + eps), tp / (y.sum(1) + eps)
    b2 = beta**2
    return ((1 + b2) * precision * recall / (b2 * precision + recall + eps)).mean()


class VisionTask(Task):
    def __init__(
        self,
        model: nn.Module,
        optim: dict,
        schedule: dict,
        problem: str = "single_label",
        stages: str | list | None = "fine_tune",
        freeze_epochs: int = 1,
        train_bn: bool = True,
        thresh: float = 0.5,
        channels_last: bool = False,
    ):
        super().__init__(optim, schedule)
        if problem not in PROBLEMS:
            raise ConfigError(f"task.problem={problem!r} must be one of: {', '.join(PROBLEMS)}")
        self.model, self.problem, self.thresh = model, problem, thresh
        self.stages, self.freeze_epochs, self.train_bn = stages, int(freeze_epochs), train_bn
        self.channels_last = channels_last
        if channels_last:  # NHWC convolutions: often faster on CPUs (oneDNN) and tensor cores
            self.model.to(memory_format=torch.channels_last)
        self._staged: StagedTraining | None = None

    # --- model and layer groups ------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()

    def configure_callbacks(self):
        """The stages of this run (fine_tune, or the list from config) as one Lightning callback."""
        if self.stages is None:
            return []  # a plain fit_one_cycle(trainer.max_epochs, optim.lr), nothing frozen
        if self._staged is None:  # built once: later calls (trainer.test) must see the same stages
            if self.stages == "fine_tune":
                stages = fine_tune(self.trainer.max_epochs, self.optim["lr"], self.freeze_epochs)
            elif isinstance(self.stages, str):
                raise ConfigError(f"task.stages={self.stages!r}: give fine_tune, null or a list of stages")
            else:
                stages = parse_stages(self.stages)
            self._staged = StagedTraining(stages, train_bn=self.train_bn)
        return [self._staged]

    # --- loss and metrics ------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        out = out.float()
        if self.problem == "single_label":
            return F.cross_entropy(out, y, reduction=reduction)
        if self.problem == "multi_label":
            loss = F.binary_cross_entropy_with_logits(out, y, reduction="none").mean(1)
        else:
            loss = F.mse_loss(out, y, reduction="none").mean(1)
        return loss.mean() if reduction == "mean" else loss

    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return self.loss(self(x), y)

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        out = self(x).float()
        n = len(y)
        self.log(f"{stage}/loss", self.loss(out, y), batch_size=n, prog_bar=stage == "val", sync_dist=True)
        if self.problem == "single_label":
            error = (out.argmax(1) != y).float().mean()
            self.log(f"{stage}/error_rate", error, batch_size=n, prog_bar=stage == "val", sync_dist=True)
        elif self.problem == "multi_label":
            probs = out.sigmoid()
            self.log(f"{stage}/accuracy_multi", ((probs > self.thresh).float() == y).float().mean(), batch_size=n, sync_dist=True)
            self.log(f"{stage}/fbeta", fbeta_multi(probs, y, self.thresh), batch_size=n, prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    # --- interpretation --------------------------------------------------------------------------
    @torch.no_grad()
    def predict_dataset(self, dataset, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, targets) for every item of `dataset`, in order, in eval mode."""
        was_training = self.training
        self.eval()
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=datamodule.batch_size, num_workers=datamodule.num_workers)
        outs, ys = [], []
        for x, y in loader:
            outs.append(self(datamodule.normalize(x.to(self.device))).float().cpu())
            ys.append(y)
        self.train(was_training)
        return torch.cat(outs), torch.cat(ys)

    def summarize(self, run_dir: Path) -> dict | None:
        from fastlight.interpret.vision import interpret

        return interpret(self, self.trainer.datamodule, Path(run_dir) / "interpretation", self.loggers)
