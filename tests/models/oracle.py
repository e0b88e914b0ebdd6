"""Comparing a fastlight module with fastai's: leaf layers in order, state dicts entry by entry."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def leaf_types(module: nn.Module) -> list[str]:
    """Class names of the leaf layers in order; a weight-/spectral-normalised conv counts as its conv."""
    out = []
    for m in module.modules():
        kind = parametrize.type_before_parametrizations(m)
        kids = [n for n, _ in m.named_children() if n != "parametrizations"]
        if not kids and kind.__module__.startswith("torch.nn.modules"):  # not the norms' own modules
            out.append(kind.__name__)
    return out


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """src's state dict into dst, entry by entry in order (names differ: fastai's old norm hooks)."""
    s, d = src.state_dict(), dst.state_dict()
    assert [v.shape for v in s.values()] == [v.shape for v in d.values()]
    dst.load_state_dict(dict(zip(d.keys(), s.values())))


def perturb(module: nn.Module) -> None:
    """Move every parameter off its init so that a comparison exercises all of them."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
