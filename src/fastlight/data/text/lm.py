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
from pathlib import Path

import lightning as L
import numpy as np
import torch

from fastlight.data.core import data_root
from fastlight.data.text import sources
from fastlight.data.text.synthetic import grammar_corpus, ideal_perplexity
from fastlight.data.text.vocab import check_vocab, numericalize, read_vocab, write_vocab
from fastlight.errors import ConfigError, DataError


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


class LMData(L.LightningDataModule):
    """Tokens, vocabulary and streams; a subclass says where the documents come from (`load`).

    After `setup`: `vocab` (list of str, `xxunk` = 0, `xxpad` = 1), `dims = {"vocab_size"}` for
    the model, `stats`, and `<run folder>/vocab.json` (rank 0) for the classifier and `generate`.
    """

    def __init__(self, batch_size: int = 64, bptt: int = 70, variable_bptt: bool = False,
                 eval_batch_size: int | None = None, shuffle: bool = True, max_vocab: int = 60000,
                 min_freq: int = 3, vocab: list[str] | None = None, vocab_path: str | None = None,
                 n_workers: int = 2, cache: bool = True, seed: int = 42):
        super().__init__()
        self.batch_size, self.bptt, self.variable_bptt = batch_size, bptt, variable_bptt
        self.eval_batch_size, self.shuffle = eval_batch_size, shuffle
        self.max_vocab, self.min_freq, self.n_workers, self.cache = max_vocab, min_freq, n_workers, cache
        self.given_vocab, self.vocab_path, self.seed = vocab, vocab_path, int(seed)
        self.vocab: list[str] | None = None
        self.splits: dict = {}
        self.dims: dict = {}
        self.stats: dict = {}

    def load(self) -> sources.Corpus:
        raise NotImplementedError

    def check(self) -> None:
        for key in ("batch_size", "bptt"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"data.{key}={value!r} must be a positive whole number")
        if self.eval_batch_size is not None and (not isinstance(self.eval_batch_size, int) or self.eval_batch_size < 1):
            raise ConfigError(f"data.eval_batch_size={self.eval_batch_size!r} must be a positive whole number or null")

    def setup(self, stage: str | None = None):
        if self.vocab is not None:
            return
        # Checked here, not in __init__: Hydra would wrap the error of a constructor in its own.
        self.check()
        corpus = self.load()
        given = self.given_vocab
        if given is not None:
            given = check_vocab(list(given), "data.vocab")
        elif self.vocab_path:
            given = read_vocab(self.vocab_path)
        vocab, splits = numericalize(corpus, given, self.max_vocab, self.min_freq, self.n_workers, self.cache)
        for split, (ids, _) in splits.items():
            if len(ids) < 2:
                raise DataError(f"{corpus.name}: the {split} texts hold {len(ids)} token(s); a language model "
                                f"needs at least two (is the corpus empty?)")
        self.vocab, self.splits, self.corpus_name = vocab, splits, corpus.name
        self.dims = {"vocab_size": len(vocab)}
        train_ids = splits["train"][0]
        self.stats = {
            "corpus": corpus.name, "vocab_size": len(vocab),
            **{f"{s}_tokens": len(ids) for s, (ids, _) in splits.items()},
            **{f"{s}_docs": len(offs) - 1 for s, (_, offs) in splits.items()},
            "train_unk_pct": round(100 * float((train_ids == 0).float().mean()), 3),
        }
        rows = self.batch_size * self._world()[1]
        if (len(train_ids) - 1) // rows < 1:
            raise DataError(f"{corpus.name}: {len(train_ids)} training tokens are too few for {rows} rows "
                            f"(data.batch_size={self.batch_size}); lower data.batch_size")
        if self.trainer is not None and self.trainer.is_global_zero:
            write_vocab(vocab, Path(self.trainer.default_root_dir))

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return int(self.trainer.global_rank), int(self.trainer.world_size)

    def _epoch(self) -> int:
        return self.trainer.current_epoch

    def _stream(self, split: str, train: bool) -> LMStream:
        ids, offsets = self.splits[split]
        rank, world = self._world()
        bs = self.batch_size if train else (self.eval_batch_size or self.batch_size)
        # An evaluation text shorter than its rows gets fewer rows rather than no batch at all.
        bs = max(1, min(bs, (len(ids) - 1) // world)) if not train else bs
        return LMStream(ids, offsets, bs, self.bptt, shuffle=train and self.shuffle, seed=self.seed,
                        variable_bptt=train and self.variable_bptt, rank=rank, world_size=world,
                        epoch_fn=self._epoch if (train and self.trainer is not None) else None)

    def train_dataloader(self):
        return self._stream("train", True)

    def val_dataloader(self):
        return self._stream("valid", False)

    def test_dataloader(self):
        return self._stream("test" if "test" in self.splits else "valid", False)


def _folder(root: str | None, name: str) -> Path:
    return data_root(root) / name


class PTB(LMData):
    """Mikolov's PTB in <root>/ptb; `train: valid` trains on ptb.valid.txt, scores ptb.test.txt."""

    def __init__(self, root: str | None = None, train: str = "train", download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root, self.train, self.download = root, train, download

    def load(self):
        return sources.ptb(_folder(self.root, "ptb"), self.train, self.download)


class WikiText2(LMData):
    """WikiText-2 (wiki.{train,valid,test}.tokens) in <root>/wikitext-2, articles as documents."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root, self.download = root, download

    def load(self):
        return sources.wikitext2(_folder(self.root, "wikitext-2"), self.download)


class IMDbSample(LMData):
    """fastai's IMDB_SAMPLE reviews (<root>/imdb_sample/texts.csv) as a language-model corpus."""

    def __init__(self, root: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = root

    def load(self):
        return sources.imdb_sample(_folder(self.root, "imdb_sample"))


class IMDb(LMData):
    """All 100,000 IMDb reviews (unsup included), `valid_pct` held out: lesson 3's fine-tuning corpus."""

    def __init__(self, root: str | None = None, download: bool = True, valid_pct: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.root, self.download, self.valid_pct = root, download, valid_pct

    def load(self):
        return sources.imdb(_folder(self.root, "imdb"), self.download, labelled=False,
                            valid_pct=self.valid_pct, seed=self.seed)


class TextFiles(LMData):
    """Any folder of .txt files or a CSV with a text column (`path`, `text_col`)."""

    def __init__(self, path: str | None = None, text_col: str = "text", valid_col: str | None = None,
                 valid_pct: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.path, self.text_col, self.valid_col, self.valid_pct = path, text_col, valid_col, valid_pct

    def load(self):
        return sources.text_path(self.path, self.text_col, None, self.valid_col, self.valid_pct, self.seed)


class Shakespeare(LMData):
    """Tiny Shakespeare (<root>/tinyshakespeare/input.txt), speeches as documents, last 10% valid."""

    def __init__(self, root: str | None = None, valid_pct: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.root, self.valid_pct = root, valid_pct

    def load(self):
        return sources.shakespeare(_folder(self.root, "tinyshakespeare"), self.valid_pct)


class SyntheticLM(LMData):
    """The planted grammar of `synthetic.py`; `ideal_perplexity` is what a perfect model scores."""

    def __init__(self, n_docs: int = 600, n_keys: int = 4, n_sentences: int = 3, valid_pct: float = 0.2,
                 **kwargs):
        kwargs.setdefault("min_freq", 1)
        super().__init__(**kwargs)
        self.n_docs, self.n_keys, self.n_sentences, self.valid_pct = n_docs, n_keys, n_sentences, valid_pct
        self.ideal_perplexity = ideal_perplexity(n_keys, n_sentences)

    def load(self):
        return grammar_corpus(self.n_docs, self.n_keys, self.n_sentences, self.valid_pct, self.seed)
