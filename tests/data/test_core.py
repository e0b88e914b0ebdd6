"""`Chunk`: the fast path's K batches move to a device with one call."""

from __future__ import annotations

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from fastlight.data.core import Chunk


def chunk_of(n: int) -> Chunk:
    return Chunk((torch.arange(3) + i, torch.ones(3) * i) for i in range(n))


def test_a_chunk_already_on_the_device_is_handed_over_as_it_is():
    chunk = chunk_of(4)
    moved = move_data_to_device(chunk, torch.device("cpu"))  # what Lightning's batch_to_device calls
    assert moved is chunk and moved[2][0] is chunk[2][0]


def test_a_chunk_moves_every_tensor_of_every_batch():
    moved = move_data_to_device(chunk_of(4), torch.device("meta"))
    assert isinstance(moved, Chunk) and len(moved) == 4
    assert all(t.device.type == "meta" for batch in moved for t in batch)
    assert [t.shape for batch in moved for t in batch] == [t.shape for batch in chunk_of(4) for t in batch]
