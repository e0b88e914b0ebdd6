"""fastai v2's TabularModel: entity embeddings for the categorical columns, an MLP on top.

    x_cat -> one Embedding per column (width emb_sz_rule(levels)) -> concat -> Dropout(emb_drop)
    x_cont -> BatchNorm1d
    [emb, cont] -> (Linear(bias=False) -> ReLU -> BatchNorm1d -> Dropout(ps[i])) for each hidden size
                -> Linear(out_sz) [-> sigmoid into y_range]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastlight.errors import ConfigError
from fastlight.models.embeddings import Embedding, SigmoidRange, emb_sz_rule


class LinBnDrop(nn.Sequential):
    """fastai's LinBnDrop(lin_first=True): the BN that follows makes the Linear's bias redundant."""

    def __init__(self, n_in: int, n_out: int, p: float = 0.0):
        layers: list[nn.Module] = [nn.Linear(n_in, n_out, bias=False), nn.ReLU(inplace=True), nn.BatchNorm1d(n_out)]
        if p:
            layers.append(nn.Dropout(p))
        super().__init__(*layers)
        bn = layers[2]
        with torch.no_grad():  # fastai's BatchNorm init: weight 1, bias 1e-3
            bn.bias.fill_(1e-3)


class TabularModel(nn.Module):
    def __init__(
        self, n_cats: Sequence[int], n_cont: int, out_sz: int, layers: Sequence[int] = (200, 100),
        ps: float | Sequence[float] = 0.0, emb_drop: float = 0.0, y_range: Sequence[float] | None = None,
    ):
        super().__init__()
        layers = [int(h) for h in layers]
        ps = [float(ps)] * len(layers) if isinstance(ps, (int, float)) else [float(p) for p in ps]
        if len(ps) != len(layers):
            raise ConfigError(f"model.ps has {len(ps)} values for {len(layers)} layers; give one per layer or a number")
        if any(not 0 <= p < 1 for p in ps + [emb_drop]):
            raise ConfigError("model.ps and model.emb_drop must be dropout probabilities in [0, 1)")
        self.embeds = nn.ModuleList(Embedding(n, emb_sz_rule(n)) for n in n_cats)
        self.emb_drop = nn.Dropout(emb_drop)
        self.bn_cont = nn.BatchNorm1d(n_cont) if n_cont else None
        n_emb = sum(e.embedding_dim for e in self.embeds)
        sizes = [n_emb + n_cont, *layers]
        self.layers = nn.Sequential(*(LinBnDrop(a, b, p) for a, b, p in zip(sizes[:-1], sizes[1:], ps)))
        self.head = nn.Linear(sizes[-1], out_sz)
        self.y_range = SigmoidRange(*y_range) if y_range is not None else None

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.embeds:
            parts.append(self.emb_drop(torch.cat([e(x_cat[:, i]) for i, e in enumerate(self.embeds)], 1)))
        if self.bn_cont is not None:
            parts.append(self.bn_cont(x_cont))
        out = self.head(self.layers(torch.cat(parts, 1)))
        if self.y_range is not None:
            out = self.y_range(out)
        return out
