"""The models of fastbook chapter 4 (3s against 7s): a pixel-similarity baseline, `linear1`, `simple_net`.

Every constructor takes the data's `dims`: `n_in` (784 pixels) and `digits` (e.g. [3, 7]). Labels are
positions in `digits`; the two trained models answer the chapter's question "is it the first digit?"
(a 3), one logit per image, and are trained with `mnist_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastlight.errors import ConfigError

DISTANCES = ("l1", "rmse")


def mnist_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The chapter's loss: how far the sigmoid of each logit is from its 0/1 target, averaged.

    `preds` and `targets` must have the same shape (a (n, 1) against (n,) pair would broadcast to
    (n, n), the chapter's classic pitfall), so both are flattened first.
    """
    p = preds.reshape(-1).sigmoid()
    return torch.where(targets.reshape(-1) == 1, 1 - p, p).mean()


def init_params(*size: int, std: float = 1.0) -> nn.Parameter:
    """The chapter's `init_params`: weights drawn from N(0, std**2)."""
    return nn.Parameter(torch.randn(*size) * std)


def _two_digits(digits: Sequence[int], model: str) -> list[int]:
    digits = [int(d) for d in digits]
    if len(digits) != 2:
        raise ConfigError(
            f"model={model} answers the chapter's yes/no question with mnist_loss and needs exactly two digits, "
            f"but data.digits={digits}; use model=pixel_similarity for more"
        )
    return digits


class Linear1(nn.Module):
    """The chapter's `linear1`: `xb @ weights + bias`, both drawn from N(0, 1) by `init_params`."""

    def __init__(self, n_in: int = 784, digits: Sequence[int] = (3, 7)):
        super().__init__()
        self.digits = _two_digits(digits, "linear")
        self.weights = init_params(n_in, 1)
        self.bias = init_params(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weights + self.bias


class SimpleNet(nn.Sequential):
    """The chapter's `simple_net`: Linear(784, 30) -> ReLU -> Linear(30, 1), torch's default init
    (the chapter's `nn.Sequential` version, the one trained with `Learner.fit(40, 0.1)`)."""

    def __init__(self, n_in: int = 784, digits: Sequence[int] = (3, 7), n_hidden: int = 30):
        super().__init__(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, 1))
        self.digits = _two_digits(digits, "simple_net")


class PixelSimilarity(nn.Module):
    """The chapter's baseline: the mean image of each digit ("the ideal 3"), and each image goes to
    the nearest mean by mean absolute difference (`l1`) or root mean squared difference (`rmse`).

    Nothing is learned by gradient: `accumulate` adds a batch of training images to per-digit sums.
    The sums are buffers, so a checkpoint keeps the means.
    """

    def __init__(self, n_in: int = 784, digits: Sequence[int] = (3, 7), distance: str = "l1"):
        super().__init__()
        if distance not in DISTANCES:
            raise ConfigError(f"model.distance={distance!r} is unknown; choose one of: {', '.join(DISTANCES)}")
        self.digits = [int(d) for d in digits]
        self.distance = distance
        self.register_buffer("sums", torch.zeros(len(self.digits), n_in, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(len(self.digits), dtype=torch.float64))

    def reset(self) -> None:
        self.sums.zero_()
        self.counts.zero_()

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.sums.index_add_(0, y, x.to(self.sums.dtype))
        self.counts.index_add_(0, y, torch.ones_like(y, dtype=self.counts.dtype))

    @property
    def means(self) -> torch.Tensor:
        """(n_digits, n_in) mean images; a digit with no training image yet has an all-zero mean."""
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, n_digits) distances of each image to each mean image."""
        diff = x.unsqueeze(1) - self.means.unsqueeze(0)
        if self.distance == "l1":
            return diff.abs().mean(-1)
        return diff.pow(2).mean(-1).sqrt()
