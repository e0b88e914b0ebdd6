"""Shared data plumbing: the data root and in-memory batching.

Small tabular-ish tasks (MNIST as flat vectors, collab, tabular) are dominated by per-batch
overhead, not arithmetic. `TensorBatches` slices whole batches from tensors held in memory
(no per-row `__getitem__` + collate), shards them between DDP ranks, and on the fast path hands
Lightning a *chunk* of several batches per `training_step` (`fastlight.training.fast_path`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader


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
    """Several batches that one `training_step` runs as several optimizer steps (the fast path).

    Lightning moves a batch that has a `.to(device)` with that one call (its documented rule for
    custom batch types) instead of walking the chunk's 3*K tensors one by one: a chunk is cut from
    tensors that all live on one device, so when the first is already there, all are."""

    def to(self, device, **kwargs) -> Chunk:
        device = torch.device(device)
        if not self or not self[0] or self[0][0].device == device:
            return self
        return Chunk(tuple(t.to(device, **kwargs) for t in batch) for batch in self)


def trained_position(trainer) -> dict:
    """A training loader's place for a mid-epoch checkpoint: the epoch and how many of its batches
    Lightning has trained ({} without a trainer)."""
    if trainer is None:
        return {}
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return {"epoch": trainer.current_epoch, "batches": int(done)}


class TensorBatches:
    """Iterate over `tensors` (same first dimension) in batches sliced from a permutation.

    - `shuffle`: a fresh permutation each epoch, drawn from `(seed, epoch)` so a run resumed
      at an epoch boundary sees exactly the batches an uninterrupted run would.
    - `trainer`: read at iteration time for the epoch and, under DDP, the rank: every rank draws
      the same permutation and keeps every `world_size`-th row of it, so an epoch's rows are split
      between the ranks with none twice and none left out, and every rank runs the same number of
      batches (DDP needs that: a rank with one batch more would wait forever for the others).
    - `steps_per_call > 1`: yield `Chunk`s of that many batches (training only; see
      `fastlight.training.fast_path`).
    - resumable: `state_dict`/`load_state_dict` (Lightning calls them for loaders that have them)
      record how many batches of which epoch were trained, so a run resumed from a checkpoint
      saved mid-epoch carries on with the batches an uninterrupted run would see next.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...] | list[torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        steps_per_call: int = 1,
        drop_last: bool = False,
        trainer=None,
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
        self.trainer = trainer
        self.epochs_started = 0  # the epoch when no trainer is attached
        self.skip: tuple[int, int] | None = None  # (epoch, Lightning batches already trained)

    def state_dict(self) -> dict:
        return trained_position(self.trainer)

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.skip = (int(state["epoch"]), int(state["batches"]))

    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    @property
    def n_batches(self) -> int:
        """Optimizer steps per epoch on this rank."""
        _, world = self._rank_world()
        rows = math.ceil(self.n / world) if not self.drop_last else self.n // world
        return rows // self.batch_size if self.drop_last else math.ceil(rows / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.n_batches / self.steps_per_call)

    def _order(self) -> torch.Tensor | None:
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epochs_started
        self.epochs_started += 1
        if not self.shuffle:
            return None
        g = torch.Generator().manual_seed(self.seed * 100_003 + int(epoch))
        return torch.randperm(self.n, generator=g)

    def _batches(self):
        order = self._order()
        rank, world = self._rank_world()
        if world > 1:
            rows = (order if order is not None else torch.arange(self.n))[rank::world]
            if self.drop_last:
                rows = rows[: self.n_batches * self.batch_size]
            # The same number of near-equal batches on every rank (shards differ by one row at most).
            for idx in torch.tensor_split(rows, self.n_batches):
                yield tuple(t[idx] for t in self.tensors)
            return
        # One gather per epoch, then every batch is a cheap contiguous slice.
        data = tuple(t[order] for t in self.tensors) if order is not None else self.tensors
        bs = self.batch_size
        for i in range(self.n_batches):
            yield tuple(t[i * bs : (i + 1) * bs] for t in data)

    def __iter__(self):
        skip = 0
        if self.skip is not None and self.trainer is not None and self.skip[0] == self.trainer.current_epoch:
            skip = self.skip[1]
        self.skip = None
        for i, item in enumerate(self._calls()):
            if i >= skip:
                yield item

    def _calls(self):
        if self.steps_per_call == 1:
            yield from self._batches()
            return
        chunk = Chunk()
        for b in self._batches():
            chunk.append(b)
            if len(chunk) == self.steps_per_call:
                yield chunk
                chunk = Chunk()
        if chunk:
            yield chunk


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle drawn from (seed, epoch) that also hands each item its random draw: it yields
    (index, item seed) pairs, so the crops and flips of an epoch are the same whether the run went
    straight through or was resumed (Lightning calls `set_epoch` each epoch), with or without workers."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0
        self.skip: tuple[int, int] | None = None  # (epoch, items already trained): a mid-epoch checkpoint's

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        start = self.skip[1] if self.skip is not None and self.skip[0] == self.epoch else 0
        self.skip = None
        return iter(zip(order[start:].tolist(), seeds[start:].tolist()))


class EpochLoader(torch.utils.data.DataLoader):
    """A training DataLoader over an `EpochSampler` that Lightning checkpoints: it saves the state of a
    training loader that has `state_dict`/`load_state_dict`, so a run resumed from a checkpoint saved
    mid-epoch skips the batches already trained and sees the ones an unbroken run would see next."""

    trainer = None  # set by the data module; without it (a re-created loader) only epochs resume exactly

    def state_dict(self) -> dict:
        return trained_position(self.trainer)

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.sampler.skip = (int(state["epoch"]), int(state["batches"]) * self.batch_size)


def epoch_loader(ds, batch_size: int, train: bool, seed: int, num_workers: int, trainer=None) -> DataLoader:
    """The image loaders' DataLoader: training batches from an `EpochSampler` (resumable, seeded
    crops), the last partial training batch dropped when there is more than one batch (BN needs > 1)."""
    sampler = EpochSampler(len(ds), seed) if train else None
    loader = (EpochLoader if train else DataLoader)(
        ds, batch_size=batch_size, sampler=sampler, drop_last=train and len(ds) > batch_size,
        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0)  # no fork and no cold first batch per epoch
    if train:
        loader.trainer = trainer
    return loader


def seeded(transform, key, *tensors):
    """`transform(*tensors)` with the global torch RNG seeded by the item's seed when `key` carries one."""
    if not isinstance(key, tuple):
        return transform(*tensors)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(key[1])
        return transform(*tensors)
