"""The language-model data module: a corpus's documents, tokenized and numericalized, read as
`LMStream`s (stream.py: shuffled documents -> `batch_size` rows -> `bptt` windows). One subclass
per source says where the documents come from (`load`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from fastlight.data.core import data_root
from fastlight.data.text import sources
from fastlight.data.text.stream import LMStream
from fastlight.data.text.synthetic import (
    grammar_corpus,
    ideal_perplexity,
    planted_word_corpus,
)
from fastlight.data.text.vocab import check_vocab, numericalize, read_vocab, write_vocab
from fastlight.errors import ConfigError, DataError


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
        for split, (ids, offsets) in splits.items():
            if len(ids) < 2:
                why = "the corpus is empty" if not any(corpus.docs.values()) else "too few documents for the split"
                raise DataError(f"{corpus.name}: the {split} split holds {len(ids)} token(s) in {len(offsets) - 1} "
                                f"document(s), a language model needs at least two ({why})")
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
    """Synthetic documents (`synthetic.py`). `kind: grammar`: the planted grammar with its long-range
    key, `ideal_perplexity` being what a perfect model scores; `kind: planted_word`: the
    classifier's documents without their labels (step 2 of a synthetic ULMFiT pipeline)."""

    def __init__(self, kind: str = "grammar", n_docs: int = 600, n_keys: int = 4, n_sentences: int = 3,
                 valid_pct: float = 0.2, **kwargs):
        kwargs.setdefault("min_freq", 1)
        super().__init__(**kwargs)
        self.kind, self.n_docs, self.n_keys, self.n_sentences = kind, n_docs, n_keys, n_sentences
        self.valid_pct = valid_pct
        self.ideal_perplexity = ideal_perplexity(n_keys, n_sentences) if kind == "grammar" else None

    def load(self):
        if self.kind == "grammar":
            return grammar_corpus(self.n_docs, self.n_keys, self.n_sentences, self.valid_pct, self.seed)
        if self.kind == "planted_word":
            corpus = planted_word_corpus(self.n_docs, self.valid_pct, seed=self.seed)
            corpus.labels = {}
            return corpus
        raise ConfigError(f"data.kind={self.kind!r} must be grammar or planted_word")
