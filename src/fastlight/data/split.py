"""The data's seeded train/valid split, one copy for every data source.

- `random_split_indices(n, valid_pct, seed)`: fastai's `RandomSplitter(valid_pct, seed)`:
  one permutation of `range(n)` from a generator seeded with `seed`; its first
  `int(valid_pct * n)` indices are the validation set, the rest the training set. (fastai
  calls `torch.manual_seed(seed)` then `torch.randperm(n)`: the same numbers, without touching
  the global generator.) `n_valid=` gives a count instead of a fraction (MNIST's 10,000).

The training shuffle of in-memory data is drawn from (seed, the trainer's epoch) inside
`fastlight.data.core.TensorBatches`, so a run resumed at an epoch boundary sees the batches an
unbroken one would.
"""

from __future__ import annotations

import numpy as np
import torch


def random_split_indices(
    n: int, valid_pct: float | None = None, seed: int = 0, n_valid: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, valid indices) of `n` items, as int64 arrays, from one seeded permutation."""
    if (valid_pct is None) == (n_valid is None):
        raise ValueError("give exactly one of valid_pct and n_valid")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    cut = int(valid_pct * n) if n_valid is None else int(n_valid)
    return order[cut:], order[:cut]
