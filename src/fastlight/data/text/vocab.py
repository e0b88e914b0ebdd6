"""The vocabulary, as fastai's `Numericalize` builds it (`make_vocab`).

- Types are ranked by count, most frequent first; ties keep the order in which the types first
  appear in the counted documents (`Counter.most_common` is a stable sort of insertion order).
- Of the `max_vocab` most frequent, those seen at least `min_freq` times are kept.
- The special tokens go first, in their fixed order (`xxunk` = 0, `xxpad` = 1, `xxbos` = 2, ...),
  wherever they ranked; the list is cut to `max_vocab` again.
- Then it is padded with `xxfake` to a multiple of 8 (for fp16 kernels). fastai always adds
  between 1 and 8 of them, 8 when the length already is a multiple of 8; so does this.

Any type not in the vocabulary reads as `xxunk` (id 0); `xxfake` never matches a real token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fastlight.data.text.tokenizer import SPECIAL_TOKENS, UNK
from fastlight.errors import ConfigError, DataError

FAKE = "xxfake"
VOCAB_FILE = "vocab.json"


def ranked_types(types: list[str], ids: np.ndarray) -> tuple[list[str], np.ndarray]:
    """`types` ordered as `Counter(tokens).most_common()` would order them, with their counts."""
    counts = np.bincount(ids, minlength=len(types))
    first = np.full(len(types), len(ids), dtype=np.int64)
    seen, where = np.unique(ids, return_index=True)
    first[seen] = where
    # lexsort sorts by the last key first: count descending, then first appearance.
    order = np.lexsort((first, -counts))
    order = order[counts[order] > 0]
    return [types[i] for i in order], counts[order]


def make_vocab(ranked: list[str], counts: np.ndarray, max_vocab: int = 60000, min_freq: int = 3) -> list[str]:
    if max_vocab < len(SPECIAL_TOKENS):
        raise ConfigError(f"data.max_vocab={max_vocab} must be at least {len(SPECIAL_TOKENS)}, the special tokens")
    if min_freq < 1:
        raise ConfigError(f"data.min_freq={min_freq} must be at least 1")
    top = [t for t, c in zip(ranked[:max_vocab], counts[:max_vocab]) if c >= min_freq]
    specials = set(SPECIAL_TOKENS)
    vocab = (SPECIAL_TOKENS + [t for t in top if t not in specials])[:max_vocab]
    return vocab + [FAKE] * (8 - len(vocab) % 8)


def lookup(vocab: list[str], types: list[str]) -> np.ndarray:
    """Vocabulary id of every type (0 = xxunk for types outside it)."""
    o2i = {t: i for i, t in enumerate(vocab) if t != FAKE}
    return np.asarray([o2i.get(t, 0) for t in types], dtype=np.int64)


def check_vocab(vocab, where: str) -> list[str]:
    if not isinstance(vocab, (list, tuple)) or not vocab or not all(isinstance(t, str) for t in vocab):
        raise DataError(f"{where} is not a vocabulary (a JSON list of token strings)")
    vocab = list(vocab)
    if vocab[:2] != [UNK, SPECIAL_TOKENS[1]]:
        raise DataError(f"{where} does not start with {UNK}, xxpad: it is not a fastai-style vocabulary")
    return vocab


def read_vocab(path: str | Path) -> list[str]:
    """A vocabulary from `vocab.json`, or from a run folder that holds one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / VOCAB_FILE
    if not path.is_file():
        raise DataError(f"no vocabulary at {path}: point data.vocab_path at a language-model run folder "
                        f"or its {VOCAB_FILE}")
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e})") from None
    return check_vocab(vocab, str(path))


def write_vocab(vocab: list[str], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VOCAB_FILE
    tmp = folder / f".{VOCAB_FILE}.part"
    tmp.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


def numericalize(corpus, vocab: list[str] | None = None, max_vocab: int = 60000, min_freq: int = 3,
                 n_workers: int = 2, cache: bool = True, progress: bool = True):
    """(vocab, {split: (LongTensor of every token id, int64 document offsets)}) for `corpus`.

    Raw texts are tokenized (cached) all splits at once; the vocabulary, unless given, counts the
    training documents only, so no validation or test word decides what is known.
    """
    import torch

    from fastlight.data.text.tokenizer import encode_tokens, tokenize_cached

    names = [s for s in ("train", "valid", "test") if s in corpus.docs]
    docs = [d for s in names for d in corpus.docs[s]]
    if corpus.pretokenized:
        types, ids, offsets = encode_tokens(docs)
    else:
        types, ids, offsets = tokenize_cached(docs, n_workers=n_workers, progress=progress, cache=cache)
    bounds = np.cumsum([0] + [len(corpus.docs[s]) for s in names])
    per_split = {s: offsets[bounds[i]: bounds[i + 1] + 1] for i, s in enumerate(names)}
    if vocab is None:
        train = per_split["train"]
        ranked, counts = ranked_types(types, ids[train[0]: train[-1]])
        vocab = make_vocab(ranked, counts, max_vocab=max_vocab, min_freq=min_freq)
    lut = lookup(vocab, types)
    out = {}
    for s, offs in per_split.items():
        out[s] = (torch.from_numpy(lut[ids[offs[0]: offs[-1]]]), offs - offs[0])
    return vocab, out
