"""The language-model stream (fastai's `LMDataLoader`, AWD-LSTM's `batchify` + `get_batch`).

Each training epoch the documents are shuffled (a permutation drawn from (seed, epoch), so a run
resumed at an epoch boundary sees what an unbroken one would), concatenated into one stream
of N tokens and cut into `rows = batch_size * world_size` contiguous rows of
`bl = (N - 1) // rows` tokens; a DDP rank reads its own `batch_size` rows. Batches are read
left to right, `bptt` tokens at a time: row r of batch i continues row r of batch i - 1, which
is what lets the model carry its hidden state across batches. The target is the input shifted
by one token. The last batch of an epoch is shorter when `bptt` does not divide `bl`.

What is never a target in an epoch: the stream's first token (it has no predecessor) and its
last `(N - 1) % rows` tokens (too few to give every row one more); every other token is the
target of exactly one position. Validation and test streams are not shuffled.

`variable_bptt`: AWD-LSTM's variable sequence length. Each batch's length is drawn as
N(bptt, 5), or N(bptt / 2, 5) with probability 0.05, at least 5; the lengths of an epoch are
then scaled by one common factor (~1.03) so that they sum to `bl` in exactly ceil(bl / bptt)
batches: Lightning (the progress bar, the one-cycle schedule over
`trainer.estimated_stepping_batches`) needs the same number of steps every epoch. A task
scales its lr by `x.size(1) / datamodule.bptt`, as the paper does.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class LMStream:
    """Batches (x, y) of shape (batch_size, seq_len) over the documents `ids`/`offsets`."""

    def __init__(self, ids: torch.Tensor, offsets: np.ndarray, batch_size: int, bptt: int,
                 shuffle: bool = False, seed: int = 0, variable_bptt: bool = False,
                 rank: int = 0, world_size: int = 1, epoch_fn=None):
        self.ids, self.offsets = ids, np.asarray(offsets)
        self.batch_size, self.bptt = int(batch_size), int(bptt)
        self.shuffle, self.seed, self.variable_bptt = shuffle, int(seed), variable_bptt
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch_fn = epoch_fn
        self._epoch = 0  # used only without epoch_fn
        self.n_rows = self.batch_size * self.world_size
        self.row_len = (len(ids) - 1) // self.n_rows  # bl

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def __len__(self) -> int:
        return math.ceil(self.row_len / self.bptt)

    def _rng(self, epoch: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 4 + stream)

    def doc_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_docs)
        return torch.randperm(self.n_docs, generator=self._rng(epoch, 0)).numpy()

    def stream(self, epoch: int) -> torch.Tensor:
        """The epoch's token stream: the documents, in this epoch's order, end to end."""
        order = self.doc_order(epoch)
        if self.n_docs == 1 or not self.shuffle:
            return self.ids
        starts, ends = self.offsets[:-1][order], self.offsets[1:][order]
        # One gather: positions of every token in the new order.
        lens = ends - starts
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        index = np.arange(len(self.ids)) + shift
        return self.ids[torch.from_numpy(index)]

    def seq_lens(self, epoch: int) -> list[int]:
        bl, bptt = self.row_len, self.bptt
        n = len(self)
        if not self.variable_bptt or n == 1:
            return [bptt] * (n - 1) + [bl - bptt * (n - 1)]
        g = self._rng(epoch, 1)
        half = torch.rand(n, generator=g) >= 0.95
        mean = torch.where(half, bptt / 2, float(bptt))
        lens = (mean + 5 * torch.randn(n, generator=g)).round().clamp(min=5).double()
        bounds = torch.round(torch.cumsum(lens, 0) * (bl / lens.sum())).long().tolist()
        bounds[-1] = bl
        out, prev = [], 0
        for b in bounds:
            out.append(b - prev)
            prev = b
        if min(out) < 1:  # rows shorter than ~5 tokens a batch: fall back to even lengths
            return [bptt] * (n - 1) + [bl - bptt * (n - 1)]
        return out

    def current_epoch(self) -> int:
        if self.epoch_fn is not None:
            return int(self.epoch_fn())
        epoch, self._epoch = self._epoch, self._epoch + 1
        return epoch

    def __iter__(self):
        epoch = self.current_epoch()
        stream = self.stream(epoch)
        used = self.n_rows * self.row_len
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        x_rows = stream[:used].view(self.n_rows, self.row_len)[rows]
        y_rows = stream[1: used + 1].view(self.n_rows, self.row_len)[rows]
        start = 0
        for n in self.seq_lens(epoch):
            yield x_rows[:, start: start + n].contiguous(), y_rows[:, start: start + n].contiguous()
            start += n
