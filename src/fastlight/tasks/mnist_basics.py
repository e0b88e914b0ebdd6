"""Neural-net foundations, fastbook chapter 4 (lesson 3, 2022): is it a 3 or a 7?

The chapter builds a classifier before any library does it for you, in three models
(`src/fastlight/models/mnist_basics.py`):
  pixel_similarity  no training: the mean 3 and the mean 7 ("the ideal 3"), each image to the nearer
                    mean by L1 or RMSE; the baseline to beat (chapter: 0.9168 of the 3s, 0.9854 of the 7s)
  linear            `linear1`, xb @ w + b with w, b ~ N(0, 1); SGD lr 1.0, 20 epochs (~0.97)
  simple_net        Linear(784, 30) -> ReLU -> Linear(30, 1); SGD lr 0.1, 40 epochs (~0.982)

The two trained models output one logit, "is it the first digit?", and learn from `mnist_loss`
(sigmoid, then 1 - p for the first digit, p for the other) because accuracy is no loss: it only
changes when a prediction flips, so its gradient is zero almost everywhere. The run shows that:
`val/loss` moves smoothly from epoch to epoch while `val/acc` jumps (loss_vs_accuracy.png).

The chapter's seven steps, and where each one happens:
  1. init      the model's constructor (`init_params`: N(0, 1))
  2. predict   `training_loss`: preds = model(xb)
  3. loss      `training_loss`: mnist_loss(preds, targets)
  4. gradient  loss.backward() (Lightning's automatic optimization)
  5. step      `optim=scratch_sgd`: p -= lr * p.grad, written out in `fastlight.training.optimizers`;
               the gradients are then zeroed for the next batch
  6. repeat    every batch of every epoch (the Trainer)
  7. stop      after `trainer.max_epochs`

The pixel baseline "trains" for one epoch that only adds the training images to per-digit sums
(no optimizer, no gradient); validation then uses the means, so its run has val metrics, a
checkpoint and a summary like any other.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastlight.models.mnist_basics import PixelSimilarity, mnist_loss
from fastlight.tasks.base import Task


def is_first(y: torch.Tensor) -> torch.Tensor:
    """The chapter's 0/1 target: 1 for the first of `digits` (a 3), 0 for the second (a 7)."""
    return (y == 0).float()


class MnistBasicsTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict):
        super().__init__(optim, schedule)
        self.model = model
        self.digits = list(model.digits)
        self.baseline = isinstance(model, PixelSimilarity)
        self.history: list[dict] = []  # per validation epoch: epoch, val/loss, val/acc
        self._sums: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # --- training ------------------------------------------------------------------------------------
    def training_loss(self, batch) -> torch.Tensor:
        xb, yb = batch
        preds = self.model(xb)  # 2. predict
        return mnist_loss(preds, is_first(yb))  # 3. loss; 4-7: see the module docstring

    def training_step(self, batch, batch_idx):
        if self.baseline:  # no gradient: a pass over the training images to average them
            self.model.accumulate(*batch)
            return None
        return super().training_step(batch, batch_idx)

    def on_train_epoch_start(self):
        if self.baseline:
            self.model.reset()  # the means of this epoch's images, once each

    def on_train_epoch_end(self):
        if self.baseline and self.trainer.world_size > 1:  # DDP: each rank saw its own shard of the images
            self.model.sums.copy_(self.all_gather(self.model.sums).sum(0))
            self.model.counts.copy_(self.all_gather(self.model.counts).sum(0))

    def configure_optimizers(self):
        if self.baseline:  # nothing to optimize (its recipe drops the lr monitor, which needs an optimizer)
            warnings.filterwarnings("ignore", message=".*configure_optimizers. returned .None.")  # that is the point
            return None
        return super().configure_optimizers()

    # --- evaluation ----------------------------------------------------------------------------------
    def _start(self) -> None:
        k = len(self.digits)
        self._sums = {"correct": torch.zeros(k, device=self.device), "seen": torch.zeros(k, device=self.device),
                      "loss": torch.zeros((), device=self.device)}

    def _evaluate(self, batch) -> None:
        x, y = batch
        if self.baseline:
            pred = self.model(x).argmin(1)  # the nearest mean image
        else:
            logits = self.model(x).reshape(-1)
            self._sums["loss"] += mnist_loss(logits, is_first(y)) * len(y)
            pred = torch.where(logits > 0, 0, 1)  # sigmoid > 0.5: the first digit
        correct = (pred == y).float()
        self._sums["correct"].index_add_(0, y, correct)
        self._sums["seen"].index_add_(0, y, torch.ones_like(correct))

    def _end(self, stage: str) -> None:
        sums = self._sums
        if self.trainer.world_size > 1:  # DDP: count every rank's images
            sums = {k: self.all_gather(v).sum(0) for k, v in sums.items()}
        correct, seen = sums["correct"], sums["seen"]
        acc = correct.sum() / seen.sum().clamp(min=1)
        self.log(f"{stage}/acc", acc, prog_bar=True)
        for digit, c, n in zip(self.digits, correct, seen):
            self.log(f"{stage}/acc_{digit}", c / n.clamp(min=1))
        row = {"epoch": self.current_epoch, "acc": float(acc)}
        if not self.baseline:
            loss = sums["loss"] / seen.sum().clamp(min=1)
            self.log(f"{stage}/loss", loss, prog_bar=True)
            row["loss"] = float(loss)
        if stage == "val" and not self.trainer.sanity_checking:
            self.history.append(row)

    def on_validation_epoch_start(self):
        self._start()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_validation_epoch_end(self):
        self._end("val")

    def on_test_epoch_start(self):
        self._start()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_test_epoch_end(self):
        self._end("test")

    # --- after training ------------------------------------------------------------------------------
    def summarize(self, run_dir: Path) -> dict:
        from fastlight.interpret.media import publish_figure, publish_image

        run_dir, loggers = Path(run_dir), self.trainer.loggers
        if self.baseline:
            images = {}
            for digit, mean in zip(self.digits, self.model.means.cpu()):
                pixels = (mean.reshape(28, 28).numpy() * 255).round().astype(np.uint8)
                path = publish_image(loggers, run_dir / "mean_images" / f"mean_{digit}.png", pixels, f"mean_{digit}")
                images[str(digit)] = str(path)
            return {"mean_images": images}
        if not self.history:
            return {}
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        epochs = [r["epoch"] for r in self.history]
        ax.plot(epochs, [r["loss"] for r in self.history], color="tab:blue", label="val/loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("mnist_loss", color="tab:blue")
        ax2 = ax.twinx()
        ax2.step(epochs, [r["acc"] for r in self.history], where="post", color="tab:orange", label="val/acc")
        ax2.set_ylabel("accuracy", color="tab:orange")
        ax.set_title("the loss moves smoothly; the accuracy jumps")
        path = publish_figure(loggers, run_dir / "loss_vs_accuracy.png", fig, "loss_vs_accuracy")
        return {"loss_vs_accuracy": str(path)}
