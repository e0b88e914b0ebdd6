"""Shared data plumbing: the data root and in-memory batching.

Small tabular-ish tasks (MNIST as flat vectors, collab, tabular) are dominated by per-batch
overhead, not arithmetic. `TensorBatches` slices whole batches from tensors held in memory
(no per-row `__getitem__` + collate) and hands Lightning a *chunk* of several batches per
`training_step`, so Lightning's own ~0.4 ms per step is paid once per chunk, not per batch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root` if given, else `$FASTLIGHT_DATA`, else `./data`."""
    return Path(root or os.environ.get("FASTLIGHT_DATA") or "data").expanduser()


def cache_root(*parts: str) -> Path:
    """`$FASTLIGHT_CACHE/<parts>` (default `~/.cache/fastlight/...`), created: everything derived
    from data (crappified images, tokenized corpora, a helper classifier's weights) lives here,
    keyed by its inputs and settings, never in the data root, which may be read-only."""
    path = Path(os.environ.get("FASTLIGHT_CACHE") or Path.home() / ".cache" / "fastlight").expanduser()
    path = path.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


class Chunk(list):
    """Several batches that one `training_step` runs as several optimizer steps."""


class TensorBatches:
    """Iterate over `tensors` (same first dimension) in batches sliced from a permutation.

    - `shuffle`: a fresh permutation each epoch, drawn from `(seed, epoch)` so a run resumed
      at an epoch boundary sees exactly the batches an uninterrupted run would.
    - `steps_per_call > 1`: yield `Chunk`s of that many batches (training only).
    - `epoch_fn`: returns the current epoch (the datamodule passes `trainer.current_epoch`).
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...] | list[torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        steps_per_call: int = 1,
        drop_last: bool = False,
        epoch_fn=None,
    ):
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same length")
        self.tensors = tuple(tensors)
        self.n = n
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.steps_per_call = max(1, int(steps_per_call))
        self.drop_last = drop_last
        self.epoch_fn = epoch_fn
        self._epoch = 0  # used only when no epoch_fn is given

    @property
    def n_batches(self) -> int:
        """Optimizer steps per epoch."""
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.steps_per_call)

    def _order(self) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        epoch = self.epoch_fn() if self.epoch_fn is not None else self._epoch
        self._epoch += 1
        g = torch.Generator().manual_seed(self.seed * 100_003 + int(epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        order = self._order()
        if order is not None:
            # One gather per epoch, then every batch is a cheap contiguous slice.
            data = tuple(t[order] for t in self.tensors)
        else:
            data = self.tensors
        bs = self.batch_size
        batches = (tuple(t[i * bs : (i + 1) * bs] for t in data) for i in range(self.n_batches))
        if self.steps_per_call == 1:
            yield from batches
            return
        chunk = Chunk()
        for b in batches:
            chunk.append(b)
            if len(chunk) == self.steps_per_call:
                yield chunk
                chunk = Chunk()
        if chunk:
            yield chunk
