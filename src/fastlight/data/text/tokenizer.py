"""fastai's word tokenization: its text rules, then spaCy's rule-based English tokenizer.

The rules run on the raw string, in fastai's default order (`defaults.text_proc_rules`):

  fix_html           HTML leftovers (`<br />` -> newline, `&amp;`, `#39;` ...), `<unk>` -> xxunk
  replace_rep        `cccc` -> `xxrep 4 c`      (a character repeated 3+ times)
  replace_wrep       `go go go` -> `xxwrep 3 go` (a word repeated 3+ times)
  spec_add_spaces    spaces around `/`, `#` and `\\`
  rm_useless_spaces  runs of spaces -> one space
  replace_all_caps   `SHOUT` -> `xxup shout`    (two letters or more)
  replace_maj        `Hello` -> `xxmaj hello`
  lowercase          everything lower-cased, `xxbos ` in front

then spaCy (`spacy.blank("en")`: tokenizer exceptions and punctuation rules, no model to
download) splits the result, keeping every special token whole, and spaces left inside a token
become `▁` (fastai's post-rule `replace_space`). Documents are tokenized in worker processes
(`n_workers`), in chunks, in order, with a progress bar; `tokenize_cached` stores the result
under the cache folder keyed by the texts' md5 and these settings, so a second run only reads it.
"""

from __future__ import annotations

import hashlib
import html
import json
import multiprocessing as mp
import os
import re
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = (
    "xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj")
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]
RULES_VERSION = "fastai-2.8-defaults/1"  # part of the cache key: bump it when a rule changes

# (old, new) in fastai's order: later replacements see the output of earlier ones.
HTML_FIXES = [("#39;", "'"), ("amp;", "&"), ("#146;", "'"), ("nbsp;", " "), ("#36;", "$"), ("\\n", "\n"),
              ("quot;", "'"), ("<br />", "\n"), ('\\"', '"'), ("<unk>", UNK), (" @.@ ", "."),
              (" @-@ ", "-"), ("...", " …")]
RE_SPEC = re.compile(r"([/#\\])")
RE_SPACES = re.compile(" {2,}")
RE_CHAR_REP = re.compile(r"(\S)(\1{2,})")
RE_WORD_REP = re.compile(r"(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)")
RE_ALL_CAPS = re.compile(r"(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))")
RE_MAJ = re.compile(r"(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))")


def fix_html(text: str) -> str:
    for old, new in HTML_FIXES:
        text = text.replace(old, new)
    return html.unescape(text)


def replace_rep(text: str) -> str:
    # The whole run (first char + repeats) becomes one count; spaces keep it a separate token.
    return RE_CHAR_REP.sub(lambda m: f" {TK_REP} {len(m.group(2)) + 1} {m.group(1)} ", text)


def replace_wrep(text: str) -> str:
    # group 2 holds the middle repeats; the first and the last occurrence make the +2.
    return RE_WORD_REP.sub(lambda m: f" {TK_WREP} {len(m.group(2).split()) + 2} {m.group(1)} {m.group(3)}", text)


def spec_add_spaces(text: str) -> str:
    return RE_SPEC.sub(r" \1 ", text)


def rm_useless_spaces(text: str) -> str:
    return RE_SPACES.sub(" ", text)


def replace_all_caps(text: str) -> str:
    def lower(m):
        word = m.group(2)
        return f"{m.group(1)}{TK_UP + ' ' if len(word) > 1 else ''}{word.lower()}"
    return RE_ALL_CAPS.sub(lower, text)


def replace_maj(text: str) -> str:
    def lower(m):
        word = m.group(2)
        return f"{m.group(1)}{TK_MAJ + ' ' if len(word) > 1 else ''}{word.lower()}"
    return RE_MAJ.sub(lower, text)


def lowercase(text: str) -> str:
    return f"{BOS} " + text.lower().strip()


RULES = [fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, replace_all_caps,
         replace_maj, lowercase]


def apply_rules(text: str) -> str:
    for rule in RULES:
        text = rule(text)
    return text


_NLP = None  # one spaCy tokenizer per process (built in each worker by its initializer)


def spacy_tokenizer(lang: str = "en"):
    global _NLP
    if _NLP is None:
        try:
            import spacy
            from spacy.symbols import ORTH
        except ImportError:  # a FastlightError would need fastlight.errors; keep workers light
            raise ImportError("the text tasks need spaCy: pip install spacy") from None
        nlp = spacy.blank(lang)
        for tok in SPECIAL_TOKENS:  # never split xxbos & co. into pieces
            nlp.tokenizer.add_special_case(tok, [{ORTH: tok}])
        _NLP = nlp.tokenizer
    return _NLP


def tokenize_texts_here(texts: Sequence[str]) -> list[list[str]]:
    """Rules + spaCy on `texts` in this process."""
    tok = spacy_tokenizer()
    ruled = [apply_rules(str(t)) for t in texts]
    return [[t.text.replace(" ", "▁") for t in doc] for doc in tok.pipe(ruled, batch_size=1000)]


def iter_tokenized(texts: Sequence[str], n_workers: int = 2, progress: bool = True,
                   desc: str = "tokenizing") -> Iterator[list[str]]:
    """Token lists for `texts`, in order, one at a time; `n_workers` processes (0 or 1: this one)."""
    from tqdm import tqdm

    n = len(texts)
    n_workers = max(0, int(n_workers))
    # A pool costs ~0.3 s per worker (fork + spaCy); not worth it for a handful of documents.
    if n_workers <= 1 or n < 64:
        yield from tokenize_texts_here(texts)
        return
    chunk = max(16, min(2000, n // (n_workers * 8)))
    chunks = [texts[i:i + chunk] for i in range(0, n, chunk)]
    # Built before forking: the workers inherit spaCy already imported and set up (~0.3 s each,
    # seconds on a busy machine), and none of them re-imports torch or Lightning.
    spacy_tokenizer()
    ctx = mp.get_context("fork") if sys.platform != "win32" else mp.get_context()
    with ctx.Pool(n_workers) as pool, \
            tqdm(total=n, desc=desc, unit="doc", disable=not progress or None, leave=False,
                 file=sys.stderr) as bar:
        for toks in pool.imap(tokenize_texts_here, chunks):
            yield from toks
            bar.update(len(toks))


def tokenize_texts(texts: Sequence[str], n_workers: int = 2, progress: bool = True) -> list[list[str]]:
    """Token lists for `texts`, in order (see `iter_tokenized`)."""
    return list(iter_tokenized(texts, n_workers, progress))


# --- a tokenized corpus as arrays: what the cache holds ------------------------------------

def encode_tokens(docs: Iterable[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(types in order of first appearance, int32 type ids of all tokens, int64 doc offsets)."""
    index: dict[str, int] = {}
    ids = array("i")  # 4 bytes a token, not a Python int's 28: IMDb's 30M tokens fit
    offsets = [0]
    for doc in docs:
        for tok in doc:
            i = index.get(tok)
            if i is None:
                i = index[tok] = len(index)
            ids.append(i)
        offsets.append(len(ids))
    return list(index), np.array(ids, dtype=np.int32), np.asarray(offsets, dtype=np.int64)


def texts_key(texts: Iterable[str], settings: dict) -> str:
    """md5 of the texts (in order) and the settings that change the tokens."""
    h = hashlib.md5(json.dumps(settings, sort_keys=True).encode())
    for t in texts:
        h.update(str(t).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def tokenize_cached(texts: Sequence[str], n_workers: int = 2, progress: bool = True,
                    cache: bool = True) -> tuple[list[str], np.ndarray, np.ndarray]:
    """`encode_tokens(tokenize_texts(texts))`, read from / written to the cache folder."""
    from fastlight.data.core import cache_root

    from importlib.metadata import PackageNotFoundError, version

    try:  # the version without importing spaCy: a cache hit never pays its import
        spacy_version = version("spacy")
    except PackageNotFoundError:
        spacy_version = None
    if not cache:
        return encode_tokens(iter_tokenized(texts, n_workers, progress))
    key = texts_key(texts, {"rules": RULES_VERSION, "spacy": spacy_version, "lang": "en"})
    folder = cache_root("text", key)
    arrays, types_file = folder / "tokens.npz", folder / "types.json"
    if arrays.is_file() and types_file.is_file():
        try:
            with np.load(arrays) as z:
                ids, offsets = z["ids"], z["offsets"]
            types = json.loads(types_file.read_text(encoding="utf-8"))
            if len(offsets) == len(texts) + 1:
                return types, ids, offsets
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    types, ids, offsets = encode_tokens(iter_tokenized(texts, n_workers, progress))
    _atomic_write(types_file, json.dumps(types, ensure_ascii=False).encode("utf-8"))
    tmp = folder / f".tokens.{os.getpid()}.npz"
    np.savez(tmp, ids=ids, offsets=offsets)
    tmp.replace(arrays)  # the arrays land last: their presence means the entry is complete
    return types, ids, offsets


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)
