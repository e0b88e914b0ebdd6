"""The language-model stream: fastai's LMDataLoader batches, every token once per epoch as a target,
contiguous rows, a reshuffle per epoch that the seed fixes, DDP ranks and variable bptt."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fastlight.data.text.lm import SyntheticLM
from fastlight.data.text.stream import LMStream
from fastlight.data.text.synthetic import (
    forgetful_perplexity,
    grammar_docs,
    ideal_perplexity,
)


def numbered_docs(lengths):
    """Documents whose tokens are their own positions in the unshuffled corpus: 0, 1, 2, ..."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return torch.arange(int(offsets[-1])), offsets


def epoch(stream: LMStream):
    batches = list(stream)
    return torch.cat([x for x, _ in batches], 1), torch.cat([y for _, y in batches], 1), batches


def test_batches_equal_fastais_lm_dataloader():
    data = pytest.importorskip("fastai.text.data")
    lengths = [7, 13, 3, 27, 11, 40, 9]
    ids, offsets = numbered_docs(lengths)
    docs = [ids[a:b] for a, b in itertools.pairwise(offsets)]
    for bs, seq_len in ((4, 5), (3, 7), (8, 4)):
        theirs = [(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor))
                  for x, y in data.LMDataLoader(docs, bs=bs, seq_len=seq_len, shuffle=False)]
        ours = list(LMStream(ids, offsets, bs, seq_len))
        assert len(ours) == len(theirs)
        for (x, y), (fx, fy) in zip(ours, theirs):
            assert torch.equal(x, fx) and torch.equal(y, fy)


@pytest.mark.parametrize("world_size", [1, 2])
def test_every_token_is_a_target_once_per_epoch_except_the_first_and_the_tail(world_size):
    lengths = [5, 17, 8, 30, 12, 3, 21, 9]  # N = 105 tokens
    ids, offsets = numbered_docs(lengths)
    bs = 4
    n_rows = bs * world_size
    for e in range(3):
        targets, inputs, streams = [], [], []
        for rank in range(world_size):
            s = LMStream(ids, offsets, bs, 6, shuffle=True, seed=1, rank=rank, world_size=world_size)
            s._epoch = e
            x, y, _ = epoch(s)
            targets.append(y.flatten())
            inputs.append(x.flatten())
            streams.append(s.stream(e))
        stream = streams[0]
        targets = torch.cat(targets)
        n = len(ids)
        tail = (n - 1) % n_rows
        # Each target once; never the stream's first token, never its last (N - 1) % rows.
        assert len(targets) == len(set(targets.tolist())) == n - 1 - tail
        assert set(targets.tolist()) == set(stream[1: n - tail].tolist())
        assert stream[0].item() not in set(targets.tolist())
        assert torch.equal(torch.cat(inputs).sort().values, stream[: n - 1 - tail].sort().values)


def test_rows_are_contiguous_across_batches_and_targets_shift_by_one():
    ids, offsets = numbered_docs([11, 23, 7, 31, 19])
    s = LMStream(ids, offsets, 3, 4, shuffle=True, seed=5)
    stream = s.stream(0)
    x, y, batches = epoch(s)
    bl = (len(ids) - 1) // 3
    for r in range(3):
        assert torch.equal(x[r], stream[r * bl: (r + 1) * bl])  # row r is one stretch of the stream
        assert torch.equal(y[r], stream[r * bl + 1: (r + 1) * bl + 1])
    for (x0, y0), (x1, _) in itertools.pairwise(batches):
        assert torch.equal(x1[:, 0], y0[:, -1])  # the next batch starts where this one's targets end
    assert [b[0].shape[1] for b in batches] == [4] * (bl // 4) + ([bl % 4] if bl % 4 else [])


def test_documents_reshuffle_each_epoch_and_the_seed_fixes_the_order():
    ids, offsets = numbered_docs([4] * 30)
    a = LMStream(ids, offsets, 2, 5, shuffle=True, seed=7)
    b = LMStream(ids, offsets, 2, 5, shuffle=True, seed=7)
    c = LMStream(ids, offsets, 2, 5, shuffle=True, seed=8)
    epochs_a = [epoch(a)[1] for _ in range(3)]
    epochs_b = [epoch(b)[1] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(epochs_a, epochs_b))  # same seed, same batches
    assert not torch.equal(epochs_a[0], epochs_a[1]) and not torch.equal(epochs_a[1], epochs_a[2])
    assert not torch.equal(epoch(c)[1], epochs_a[0])
    for e in range(3):  # documents stay whole: each one's tokens remain consecutive
        stream = a.stream(e)
        starts = stream[::4]
        assert torch.equal(stream.view(-1, 4), starts[:, None] + torch.arange(4))
    valid = LMStream(ids, offsets, 2, 5, shuffle=False)
    assert torch.equal(epoch(valid)[1], epoch(valid)[1]) and torch.equal(valid.stream(3), ids)


def test_variable_bptt_keeps_the_step_count_and_covers_each_row():
    ids, offsets = numbered_docs([50] * 200)  # 10,000 tokens, 4 rows of 2,499
    s = LMStream(ids, offsets, 4, 70, shuffle=True, seed=0, variable_bptt=True)
    bl = s.row_len
    lens_by_epoch = []
    for e in range(40):
        x, y, batches = epoch(s)
        lens = [b[0].shape[1] for b in batches]
        assert len(lens) == len(s) == math.ceil(bl / 70) and sum(lens) == bl  # the same steps every epoch
        assert torch.equal(x[:, 1:], y[:, :-1])
        lens_by_epoch.append(lens)
    flat = np.concatenate(lens_by_epoch)
    assert lens_by_epoch[0] != lens_by_epoch[1]
    long = flat[flat > 52]
    assert abs(long.mean() - 70 * bl / (len(s) * 68.25)) < 1.5 and 4 < long.std() < 7  # N(70, 5), rescaled
    assert 0.02 < (flat <= 52).mean() < 0.09  # the half-length draws, p = 0.05


def test_synthetic_grammar_plants_the_long_range_key():
    docs = grammar_docs(50, n_keys=4, n_sentences=3, seed=0)
    assert all(d[1][3:] == d[-2][3:] and d[1].startswith("key") and d[-2].startswith("end") for d in docs)
    assert all(len(d) == 22 for d in docs)
    assert 1 < ideal_perplexity() < forgetful_perplexity() < 3
    d = SyntheticLM(batch_size=8, bptt=10, n_docs=100, seed=0)
    d.setup()
    assert d.dims["vocab_size"] == len(d.vocab) and d.vocab[:2] == ["xxunk", "xxpad"]
    assert d.stats["train_unk_pct"] == 0 and d.stats["train_docs"] == 80
    x, y = next(iter(d.train_dataloader()))
    assert x.dtype == torch.long and x.shape == y.shape == (8, 10)
