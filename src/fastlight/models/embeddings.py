"""Entity embeddings as fastai makes them, shared by the collab and tabular tasks.

- `emb_sz_rule(n)`: fastai v2's width for a category with `n` levels (its unknown level
  included): min(600, round(1.6 * n**0.56)), e.g. 944 users -> 74, 1635 movies -> 101.
- `Embedding`: `nn.Embedding` initialised as fastai does, from a normal distribution folded
  into (-2, 2) by `fmod` and scaled to std 0.01, so every score starts near zero.
- `sigmoid_range`: squash a score into (lo, hi); with y_range=(0, 5.5) for 1-5 stars the
  model can predict a 5 without its weights running off to infinity (lesson 4). `SigmoidRange`,
  its module, is fastai's `y_range` layer for every model here (collab, tabular, the vision head).
"""

from __future__ import annotations

import torch
from torch import nn


def emb_sz_rule(n_cat: int) -> int:
    """fastai's embedding width for a category with `n_cat` levels."""
    return min(600, round(1.6 * n_cat**0.56))


def trunc_normal_(x: torch.Tensor, mean: float = 0.0, std: float = 0.01) -> torch.Tensor:
    """fastai's "truncated" normal: draws beyond 2 standard deviations wrap back by `fmod`."""
    with torch.no_grad():
        return x.normal_().fmod_(2).mul_(std).add_(mean)


class Embedding(nn.Embedding):
    """`nn.Embedding` with fastai's init (trunc-normal, std 0.01)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.01):
        super().__init__(num_embeddings, embedding_dim)
        trunc_normal_(self.weight, std=std)


def sigmoid_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """sigmoid(x) scaled from (0, 1) to (lo, hi)."""
    return torch.sigmoid(x) * (hi - lo) + lo


class SigmoidRange(nn.Module):
    def __init__(self, lo: float, hi: float):
        super().__init__()
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(x, self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"lo={self.lo:g}, hi={self.hi:g}"
