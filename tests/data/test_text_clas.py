"""Classifier data: front padding, fastai's length-sorted batches, the language model's vocabulary,
labels from a CSV or class folders, and one-sentence errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fastlight.data.text.clas import (
    PAD_ID,
    ClasData,
    SortedBatches,
    SyntheticClas,
    TextFiles,
    pad_front,
)
from fastlight.data.text.sources import Corpus
from fastlight.data.text.vocab import write_vocab
from fastlight.errors import DataError


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLIGHT_CACHE", str(tmp_path / "cache"))


def docs_of_lengths(lengths, seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = torch.from_numpy(rng.integers(2, 50, int(offsets[-1])))
    return ids, offsets, torch.arange(len(lengths))  # label = document number, to trace documents


def test_padding_goes_in_front():
    x = pad_front([torch.tensor([5, 6, 7]), torch.tensor([8])])
    assert x.tolist() == [[5, 6, 7], [PAD_ID, PAD_ID, 8]]


def test_validation_is_sorted_longest_first_as_fastais_sorted_dl():
    data = pytest.importorskip("fastai.text.data")
    lengths = [5, 9, 9, 2, 14, 9, 5, 1, 30, 14]
    ids, offsets, labels = docs_of_lengths(lengths)
    ours = [y.tolist() for _, y in SortedBatches(ids, offsets, labels, 3)]
    docs = [(ids[a:b], i) for i, (a, b) in enumerate(itertools.pairwise(offsets))]
    dl = data.SortedDL(docs, bs=3, shuffle=False, res=lengths)
    assert [i for b in ours for i in b] == list(dl.get_idxs())  # ties keep their order (a stable sort)


def test_training_batches_group_similar_lengths_and_reshuffle_per_epoch():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 400, 1000).tolist()
    ids, offsets, labels = docs_of_lengths(lengths)
    sb = SortedBatches(ids, offsets, labels, 8, shuffle=True, seed=3)
    epochs = []
    for _ in range(2):
        batches = list(sb)
        seen = torch.cat([y for _, y in batches]).tolist()
        assert len(seen) == len(set(seen)) == 1000  # 125 full batches: nothing dropped, nothing twice
        assert batches[0][0].shape[1] == max(lengths)  # the longest batch comes first (memory check)
        assert len(batches) == len(sb) == 125
        for x, y in batches:
            assert (x[:, -1] != PAD_ID).all()  # every document ends in the last column
            real = (x != PAD_ID).sum(1)
            assert torch.equal(real, torch.tensor([lengths[i] for i in y.tolist()]))
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    # Sorting inside chunks of 50 batches keeps padding small compared with random batches.
    sorted_pad = sum((x == PAD_ID).sum().item() for x, _ in sb)
    random_pad = sum(max(c) * len(c) - sum(c) for c in np.array_split(rng.permutation(lengths), 125))
    assert sorted_pad < 0.1 * random_pad
    again = SortedBatches(ids, offsets, labels, 8, shuffle=True, seed=3)
    assert [y.tolist() for _, y in again] == [y.tolist() for _, y in SortedBatches(
        ids, offsets, labels, 8, shuffle=True, seed=3)]


def test_a_partial_last_training_batch_is_dropped():
    ids, offsets, labels = docs_of_lengths([3] * 10)
    sb = SortedBatches(ids, offsets, labels, 4, shuffle=True)
    assert [len(y) for _, y in sb] == [4, 4] and len(sb) == 2
    assert [len(y) for _, y in SortedBatches(ids, offsets, labels, 4)] == [4, 4, 2]  # validation keeps all


def test_synthetic_labels_follow_the_planted_word():
    d = SyntheticClas(batch_size=16, n_docs=200)
    d.setup()
    assert d.classes == ["neg", "pos"] and d.dims == {"vocab_size": len(d.vocab), "n_classes": 2}
    good, bad = d.vocab.index("good"), d.vocab.index("bad")
    for x, y in d.val_dataloader():
        assert torch.equal((x == good).any(1).long(), y) and torch.equal((x == bad).any(1).long(), 1 - y)


class TinyCorpus(ClasData):
    def __init__(self, corpus, **kwargs):
        super().__init__(**kwargs)
        self.corpus = corpus

    def load(self):
        return self.corpus


def test_the_language_models_vocabulary_is_reused(tmp_path):
    lm_vocab = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj",
                "great", "film", "xxfake", "xxfake", "xxfake", "xxfake", "xxfake"]
    write_vocab(lm_vocab, tmp_path / "lm_run")
    corpus = Corpus("t", {"train": [["xxbos", "great", "film"], ["xxbos", "awful", "film"]],
                          "valid": [["xxbos", "great", "xxfake"]]},
                    {"train": ["pos", "neg"], "valid": ["pos"]}, pretokenized=True)
    d = TinyCorpus(corpus, vocab_path=str(tmp_path / "lm_run"), min_freq=1)
    d.setup()
    assert d.vocab == lm_vocab and d.dims["vocab_size"] == 16
    assert d.splits["train"][0].tolist() == [2, 9, 10, 2, 0, 10]  # "awful" is unknown to the LM
    assert d.splits["valid"][0].tolist() == [2, 9, 0]  # a literal xxfake is unknown too


def test_labels_from_class_folders_and_csv(tmp_path):
    for split in ("train", "valid"):
        for label, text in (("neg", "Bad. Awful."), ("pos", "Great film!")):
            (tmp_path / "f" / split / label).mkdir(parents=True)
            (tmp_path / "f" / split / label / "1.txt").write_text(text)
    d = TextFiles(path=str(tmp_path / "f"), min_freq=1, batch_size=2)
    d.setup()
    assert d.classes == ["neg", "pos"] and d.splits["valid"][2].tolist() == [0, 1]
    (tmp_path / "r.csv").write_text("review,sentiment\nGood,pos\nBad,neg\nFine,pos\nMeh,neg\nOk,pos\n")
    d = TextFiles(path=str(tmp_path / "r.csv"), text_col="review", label_col="sentiment", valid_pct=0.4,
                  min_freq=1, batch_size=2)
    d.setup()
    assert d.stats["train_docs"] == 3 and d.stats["valid_docs"] == 2


def test_bad_labels_are_one_sentence(tmp_path):
    (tmp_path / "r.csv").write_text("text,label\nGood,pos\nBad,neg\n")
    with pytest.raises(DataError, match="no column 'sentiment'"):
        TextFiles(path=str(tmp_path / "r.csv"), label_col="sentiment").setup()
    corpus = Corpus("t", {"train": [["a"], ["b"]], "valid": [["a"]]},
                    {"train": ["x", "y"], "valid": ["z"]}, pretokenized=True)
    with pytest.raises(DataError, match=r"label\(s\) \['z'\] that no training document has"):
        TinyCorpus(corpus).setup()
