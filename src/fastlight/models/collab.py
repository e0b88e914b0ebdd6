"""The two collaborative-filtering models of lesson 4 / fastbook chapter 8.

Both take index tensors `(users, items)` (index 0 = a user or item unseen in training, as
fastai's `#na#`) and return one predicted rating per pair.

- `EmbeddingDotBias`: rating = sigmoid_range(u . i + u_bias + i_bias, *y_range). The factors
  and biases are what the interpretation reads: an item's bias is how much people like it
  beyond what its factors explain.
- `EmbeddingNN`: fastai's `EmbeddingNN`: the two embeddings (widths from `emb_sz_rule`)
  concatenated and passed through Linear -> ReLU -> BatchNorm -> Dropout blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastlight.errors import ConfigError
from fastlight.models.embeddings import Embedding, SigmoidRange, emb_sz_rule, sigmoid_range


def check_y_range(y_range: Sequence[float] | None, rating_range: Sequence[float] | None = None) -> tuple | None:
    """`y_range` as a (lo, hi) tuple, refusing one the data's ratings fall outside of."""
    if y_range is None:
        return None
    if len(y_range) != 2 or not float(y_range[0]) < float(y_range[1]):
        raise ConfigError(f"model.y_range={list(y_range)} must be [lo, hi] with lo < hi, e.g. [0, 5.5]")
    lo, hi = float(y_range[0]), float(y_range[1])
    if rating_range is not None:
        r_lo, r_hi = float(rating_range[0]), float(rating_range[1])
        if r_lo < lo or r_hi > hi:
            # Suggest fastai's habit: start at 0 and leave 10% headroom above the top rating.
            s_lo = 0.0 if r_lo >= 0 else r_lo - 0.1 * (r_hi - r_lo)
            s_hi = r_hi + 0.1 * (r_hi - s_lo)
            raise ConfigError(
                f"the ratings run from {r_lo:g} to {r_hi:g} but model.y_range=[{lo:g}, {hi:g}] cannot reach "
                f"them; set model.y_range=[{s_lo:g},{s_hi:g}] (or null for no squashing)"
            )
    return lo, hi


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{name}={value} must be a positive integer")
    return value


class EmbeddingDotBias(nn.Module):
    """fastai's `EmbeddingDotBias` (collab_learner's default model)."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, y_range=(0.0, 5.5)):
        super().__init__()
        n_factors = _positive_int("n_factors", n_factors)
        self.y_range = check_y_range(y_range)
        self.u_weight = Embedding(n_users, n_factors)
        self.i_weight = Embedding(n_items, n_factors)
        self.u_bias = Embedding(n_users, 1)
        self.i_bias = Embedding(n_items, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.u_weight(users) * self.i_weight(items)).sum(1)
        score = dot + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1)
        if self.y_range is None:
            return score
        return sigmoid_range(score, *self.y_range)

    def item_factors(self) -> torch.Tensor:
        return self.i_weight.weight

    def item_bias(self) -> torch.Tensor | None:
        return self.i_bias.weight.squeeze(1)


class EmbeddingNN(nn.Module):
    """fastai's `EmbeddingNN` (collab_learner(use_nn=True)): a TabularModel on two categories."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int = 50,
        layers: Sequence[int] | None = None,
        ps: float | Sequence[float] = 0.0,
        emb_drop: float = 0.0,
        y_range=(0.0, 5.5),
    ):
        super().__init__()
        layers = [_positive_int("n_factors", n_factors)] if layers is None else [int(h) for h in layers]
        if not layers or min(layers) < 1:
            raise ConfigError(f"model.layers={layers} must be a non-empty list of positive sizes")
        ps = [float(ps)] * len(layers) if isinstance(ps, (int, float)) else [float(p) for p in ps]
        if len(ps) != len(layers) or not all(0 <= p < 1 for p in [*ps, emb_drop]):
            raise ConfigError(f"model.ps={ps} and model.emb_drop={emb_drop} must be in [0, 1), one p per layer")
        self.y_range = y_range = check_y_range(y_range)
        self.u_weight = Embedding(n_users, emb_sz_rule(n_users))
        self.i_weight = Embedding(n_items, emb_sz_rule(n_items))
        self.emb_drop = nn.Dropout(emb_drop)
        blocks: list[nn.Module] = []
        n_in = self.u_weight.embedding_dim + self.i_weight.embedding_dim
        for n_out, p in zip(layers, ps):
            # fastai v2's LinBnDrop(lin_first=True): no Linear bias, the BatchNorm after it has one.
            blocks += [nn.Linear(n_in, n_out, bias=False), nn.ReLU(), nn.BatchNorm1d(n_out)]
            if p > 0:
                blocks.append(nn.Dropout(p))
            n_in = n_out
        blocks.append(nn.Linear(n_in, 1))
        if y_range is not None:
            blocks.append(SigmoidRange(*y_range))
        self.layers = nn.Sequential(*blocks)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.u_weight(users), self.i_weight(items)], dim=1)
        return self.layers(self.emb_drop(x)).squeeze(1)

    def item_factors(self) -> torch.Tensor:
        return self.i_weight.weight

    def item_bias(self) -> torch.Tensor | None:
        return None  # no bias term: the interpretation falls back on mean predictions
