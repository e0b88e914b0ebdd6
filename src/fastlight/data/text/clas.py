"""Labelled documents for the ULMFiT classifier (fastai's `SortedDL` + front padding).

A batch is (x, y): x a LongTensor (batch, longest document of the batch) padded at the FRONT
with `xxpad` (id 1), so every document's last real token sits in the last column, where the
classifier's "last" pooling looks; y the class index. Documents of similar length go together
so that padding stays small:

- training (fastai's `SortedDL.shuffle_fn`, drawn from (seed, epoch)): a random permutation with
  the longest document moved first, cut into chunks of 50 batches, each chunk sorted by length
  (longest first) and cut into batches; the first batch (the longest, so a memory problem shows
  at once) and the last stay in place, the ones between are shuffled. The last batch is dropped
  when it is not full (fastai's training `drop_last`), so BatchNorm never sees a batch of one.
- validation and test: all documents sorted by length, longest first.

The vocabulary normally comes from the language model whose encoder the classifier reuses
(`vocab_path`: that run's folder); class names are the sorted training labels (`classes`,
written to `<run>/classes.json`); `dims = {"vocab_size", "n_classes"}` for the model.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from fastlight.data.core import data_root
from fastlight.data.text import sources
from fastlight.data.text.synthetic import planted_word_corpus
from fastlight.data.text.tokenizer import SPECIAL_TOKENS
from fastlight.data.text.vocab import check_vocab, numericalize, read_vocab, write_vocab
from fastlight.errors import ConfigError, DataError

PAD_ID = SPECIAL_TOKENS.index("xxpad")


def pad_front(docs: list[torch.Tensor], pad_id: int = PAD_ID) -> torch.Tensor:
    out = torch.full((len(docs), max(len(d) for d in docs)), pad_id, dtype=torch.long)
    for i, d in enumerate(docs):
        if len(d):
            out[i, -len(d):] = d
    return out


class SortedBatches:
    """Batches of similar-length documents; `shuffle` as fastai's SortedDL in training."""

    def __init__(self, ids: torch.Tensor, offsets: np.ndarray, labels: torch.Tensor, batch_size: int,
                 shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, epoch_fn=None):
        offsets = np.asarray(offsets)
        self.docs = [ids[a:b] for a, b in itertools.pairwise(offsets)]
        self.lengths = np.diff(offsets)
        self.labels, self.batch_size, self.shuffle, self.seed = labels, int(batch_size), shuffle, int(seed)
        self.rank, self.world_size, self.epoch_fn = int(rank), int(world_size), epoch_fn
        self._epoch = 0
        self.drop_last = shuffle and len(self.docs) >= self.batch_size

    def __len__(self) -> int:
        n = len(self.docs) // self.batch_size if self.drop_last else math.ceil(len(self.docs) / self.batch_size)
        return n // self.world_size if self.world_size > 1 else n

    def by_length(self, idx: np.ndarray) -> np.ndarray:
        # Stable, longest first: equal lengths keep their (random or original) order.
        return idx[np.argsort(-self.lengths[idx], kind="stable")]

    def batches(self, epoch: int) -> list[np.ndarray]:
        n, bs = len(self.docs), self.batch_size
        if not self.shuffle:
            order = self.by_length(np.arange(n))
            return [order[i:i + bs] for i in range(0, n, bs)]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        idx = torch.randperm(n, generator=g).numpy()
        longest = int(np.flatnonzero(idx == int(np.argmax(self.lengths)))[0])
        idx[0], idx[longest] = idx[longest], idx[0]
        chunk = bs * 50
        order = np.concatenate([self.by_length(idx[i:i + chunk]) for i in range(0, n, chunk)])
        batches = [order[i:i + bs] for i in range(0, n, bs)]
        if len(batches) > 2:
            middle = torch.randperm(len(batches) - 2, generator=g).numpy() + 1
            batches = [batches[0], *[batches[i] for i in middle], batches[-1]]
        if self.drop_last and len(batches[-1]) < bs:
            batches = batches[:-1]
        return batches

    def __iter__(self):
        if self.epoch_fn is not None:
            epoch = int(self.epoch_fn())
        else:
            epoch, self._epoch = self._epoch, self._epoch + 1
        batches = self.batches(epoch)
        if self.world_size > 1:  # each rank its own batches, the same number on every rank
            per_rank = len(batches) // self.world_size
            batches = batches[self.rank::self.world_size][:per_rank]
        for b in batches:
            yield pad_front([self.docs[i] for i in b]), self.labels[torch.from_numpy(b)]


class ClasData(L.LightningDataModule):
    """Numericalized labelled documents; a subclass says where they come from (`load`)."""

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None, max_vocab: int = 60000,
                 min_freq: int = 3, vocab: list[str] | None = None, vocab_path: str | None = None,
                 n_workers: int = 2, cache: bool = True, seed: int = 42):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.max_vocab, self.min_freq, self.n_workers, self.cache = max_vocab, min_freq, n_workers, cache
        self.given_vocab, self.vocab_path, self.seed = vocab, vocab_path, int(seed)
        self.vocab: list[str] | None = None
        self.classes: list[str] = []
        self.splits: dict = {}
        self.dims: dict = {}
        self.stats: dict = {}

    def load(self) -> sources.Corpus:
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.vocab is not None:
            return
        for key in ("batch_size", "eval_batch_size"):
            value = getattr(self, key)
            if (value is not None or key == "batch_size") and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key}={value!r} must be a positive whole number")
        corpus = self.load()
        if not corpus.labels:
            raise DataError(f"{corpus.name}: the classifier needs labelled documents (none were found)")
        if not corpus.docs.get("train") or not corpus.docs.get("valid"):
            empty = "train" if not corpus.docs.get("train") else "valid"
            raise DataError(f"{corpus.name}: the {empty} split has no documents (is the corpus empty?)")
        given = self.given_vocab
        if given is not None:
            given = check_vocab(list(given), "data.vocab")
        elif self.vocab_path:
            given = read_vocab(self.vocab_path)
        vocab, splits = numericalize(corpus, given, self.max_vocab, self.min_freq, self.n_workers, self.cache)
        self.classes = sorted(set(corpus.labels["train"]))
        if len(self.classes) < 2:
            raise DataError(f"{corpus.name}: the training documents have {len(self.classes)} class(es); "
                            f"a classifier needs at least two")
        index = {c: i for i, c in enumerate(self.classes)}
        for split, labels in corpus.labels.items():
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise DataError(f"{corpus.name}: the {split} split has label(s) {unknown[:5]} that no training "
                                f"document has")
        self.splits = {s: (ids, offs, torch.tensor([index[c] for c in corpus.labels[s]], dtype=torch.long))
                       for s, (ids, offs) in splits.items()}
        self.vocab = vocab
        self.dims = {"vocab_size": len(vocab), "n_classes": len(self.classes)}
        self.stats = {"corpus": corpus.name, "vocab_size": len(vocab), "classes": self.classes,
                      **{f"{s}_docs": len(y) for s, (_, _, y) in self.splits.items()},
                      "train_unk_pct": round(100 * float((self.splits["train"][0] == 0).float().mean()), 3)}
        if self.trainer is not None and self.trainer.is_global_zero:
            run = Path(self.trainer.default_root_dir)
            write_vocab(vocab, run)
            (run / "classes.json").write_text(json.dumps(self.classes, ensure_ascii=False), encoding="utf-8")

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    def _batches(self, split: str, train: bool) -> SortedBatches:
        ids, offsets, labels = self.splits[split]
        rank, world = self._world()
        bs = self.batch_size if train else (self.eval_batch_size or self.batch_size)
        epoch_fn = (lambda: self.trainer.current_epoch) if (train and self.trainer is not None) else None
        return SortedBatches(ids, offsets, labels, bs, shuffle=train, seed=self.seed, rank=rank,
                             world_size=world, epoch_fn=epoch_fn)

    def train_dataloader(self):
        return self._batches("train", True)

    def val_dataloader(self):
        return self._batches("valid", False)

    def test_dataloader(self):
        return self._batches("test" if "test" in self.splits else "valid", False)


class IMDbSample(ClasData):
    """fastai's IMDB_SAMPLE (<root>/imdb_sample/texts.csv): 800 training, 200 validation reviews."""

    def __init__(self, root: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = root

    def load(self):
        return sources.imdb_sample(data_root(self.root) / "imdb_sample")


class IMDb(ClasData):
    """The full IMDb: 25,000 training reviews, the 25,000 test reviews as validation (the lesson's)."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root, self.download = root, download

    def load(self):
        return sources.imdb(data_root(self.root) / "imdb", self.download, labelled=True)


class TextFiles(ClasData):
    """A CSV with text and label columns, or a folder with one subfolder of .txt files per class."""

    def __init__(self, path: str | None = None, text_col: str = "text", label_col: str | None = "label",
                 valid_col: str | None = None, valid_pct: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.path, self.text_col, self.label_col = path, text_col, label_col
        self.valid_col, self.valid_pct = valid_col, valid_pct

    def load(self):
        return sources.text_path(self.path, self.text_col, self.label_col, self.valid_col, self.valid_pct,
                                 self.seed, labelled=True)


class SyntheticClas(ClasData):
    """Filler words with one planted word (`good` -> pos, `bad` -> neg): separable only by that word."""

    def __init__(self, n_docs: int = 400, valid_pct: float = 0.2, min_len: int = 8, max_len: int = 60, **kwargs):
        kwargs.setdefault("min_freq", 1)
        super().__init__(**kwargs)
        self.n_docs, self.valid_pct, self.min_len, self.max_len = n_docs, valid_pct, min_len, max_len

    def load(self):
        return planted_word_corpus(self.n_docs, self.valid_pct, self.min_len, self.max_len, self.seed)
