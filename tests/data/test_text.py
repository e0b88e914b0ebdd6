"""`fastlight.data.text`: fastai's tokenizer and vocabulary (fastai as the oracle), the cache, the
corpora's readers and one-sentence errors for bad input."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from fastlight.data.text import tokenizer as tk
from fastlight.data.text.lm import PTB, IMDbSample, TextFiles
from fastlight.data.text.sources import Corpus, line_tokens, wikitext_articles
from fastlight.data.text.vocab import (
    FAKE,
    lookup,
    make_vocab,
    numericalize,
    ranked_types,
    read_vocab,
    write_vocab,
)
from fastlight.errors import ConfigError, DataError

# Every rule of fastai's defaults, and the corners where two rules meet.
RULE_STRINGS = [
    "Hello WORLD it's sooooo good good good good!!!",        # maj, all caps, rep, wrep
    "a/b#c \\d   e",                                          # spec_add_spaces, rm_useless_spaces
    "<br />x &amp; y #39;z quot;hi quot; nbsp;#36;5 #146;s",   # fix_html
    "The <unk> @-@ word @.@ 5 ... end \\n next \\\"q\\\"",       # fix_html: <unk>, wikitext marks, ellipsis
    "I A OK? U.S.A. NASA's IMDb McDonald X-Men",               # one-letter words, caps with punctuation
    "xxbos xxmaj xxunk stay whole; xxpad too",                  # special tokens are never split
    "no no no no no, yes yes yes. wow   wow wow",              # word repetitions around punctuation
    "Zzzzz aaaaaargh!!!! ...... ----",                          # character repetitions of every kind
    "don't can't won't I'm you're (parens) [brackets] \"quotes\" e-mail 3.14 $5 10%",
    "Tab\tand\nnewline\n\nand  double  spaces ",
    "",                                                          # an empty document is just xxbos
    "Ünïcödé CAFÉ naïve ÉCOLE",
]


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLIGHT_CACHE", str(tmp_path / "cache"))


def fastai_tokens(texts):
    core = pytest.importorskip("fastai.text.core")
    return [list(t) for t in core.TokenizeWithRules(core.WordTokenizer())(list(texts))]


def test_rules_do_what_fastai_documents():
    assert tk.replace_rep("cccc") == f" {tk.TK_REP} 4 c "
    assert tk.replace_wrep("go go go now").split() == [tk.TK_WREP, "3", "go", "now"]
    assert tk.replace_all_caps("I SHOUT") == f"i {tk.TK_UP} shout"  # one letter: lower-cased, no xxup
    assert tk.replace_maj("Hello A") == f"{tk.TK_MAJ} hello a"
    assert tk.fix_html("a<br />b #39;s <unk>") == f"a\nb 's {tk.UNK}"
    assert tk.lowercase("  Mixed ") == f"{tk.BOS} mixed"


def test_tokenizer_equals_fastai_on_every_rule():
    ours = tk.tokenize_texts(RULE_STRINGS, n_workers=0, progress=False)
    assert ours == fastai_tokens(RULE_STRINGS)
    flat = [t for doc in ours for t in doc]
    for special in (tk.BOS, tk.TK_MAJ, tk.TK_UP, tk.TK_REP, tk.TK_WREP, tk.UNK):
        assert special in flat  # every rule fired at least once


def test_tokenizer_equals_fastai_on_imdb_sample_in_parallel(real_data):
    texts = pd.read_csv(real_data / "imdb_sample" / "texts.csv")["text"].tolist()
    start = time.perf_counter()
    ours = tk.tokenize_texts(texts, n_workers=2, progress=False)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = fastai_tokens(texts)  # fastai in one process: the oracle, not the timing
    print(f"\ntokenizing {len(texts)} reviews: fastlight (2 workers) {ours_s:.2f} s, "
          f"fastai (1 process) {time.perf_counter() - start:.2f} s")
    assert len(ours) == len(theirs) == 1000
    assert ours == theirs


def test_vocab_equals_fastai_numericalize():
    data = pytest.importorskip("fastai.text.data")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    # Zipf-ish counts with many ties, specials inside the text, and rare words under min_freq.
    docs = [[tk.BOS] + [words[min(int(rng.zipf(1.3)), 60) - 1] for _ in range(rng.integers(5, 40))]
            + ([tk.TK_MAJ] if i % 3 == 0 else []) for i in range(80)]
    types, ids, _ = tk.encode_tokens(docs)
    ranked, counts = ranked_types(types, ids)
    for max_vocab, min_freq in ((60000, 3), (60000, 1), (20, 2), (24, 1), (9, 1)):
        num = data.Numericalize(min_freq=min_freq, max_vocab=max_vocab)
        num.setups(docs)
        ours = make_vocab(ranked, counts, max_vocab=max_vocab, min_freq=min_freq)
        assert ours == list(num.vocab), (max_vocab, min_freq)
        assert len(ours) % 8 == 0 and ours[-1] == FAKE
        lut = lookup(ours, types)
        for doc in docs[:10]:  # same ids, unknown words -> 0
            assert lut[[types.index(t) for t in doc]].tolist() == num(doc).tolist()


@pytest.mark.slow
def test_vocab_of_imdb_sample_equals_fastais(real_data):
    data = pytest.importorskip("fastai.text.data")
    df = pd.read_csv(real_data / "imdb_sample" / "texts.csv")
    # fastai's TextDataLoaders counts every row it tokenizes, validation included, in the
    # frame's order: the same count over the same rows gives fastai's vocabulary exactly.
    dls = data.TextDataLoaders.from_df(df, text_col="text", is_lm=True, valid_col="is_valid", bs=8,
                                       num_workers=0)
    every_row, _ = numericalize(Corpus("all", {"train": df["text"].tolist()}), n_workers=2, progress=False)
    assert every_row == list(dls.vocab)
    # fastlight counts the training reviews only: fastai's Numericalize on those tokens.
    d = IMDbSample(root=str(real_data))
    d.setup()
    train = tk.tokenize_texts(df.query("not is_valid")["text"].tolist(), n_workers=2, progress=False)
    num = data.Numericalize(min_freq=3, max_vocab=60000)
    num.setups(train)
    assert d.vocab == list(num.vocab) and len(d.vocab) < len(dls.vocab)
    assert d.dims == {"vocab_size": len(num.vocab)}


def test_tokenized_texts_are_cached_and_reread(monkeypatch, tmp_path):
    texts = ["First document.", "Second ONE here!"] * 3
    first = tk.tokenize_cached(texts, n_workers=0, progress=False)
    assert list((tmp_path / "cache" / "text").glob("*/tokens.npz"))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(tk, "iter_tokenized", no_tokenizing)
    again = tk.tokenize_cached(texts, n_workers=0, progress=False)
    assert again[0] == first[0] and np.array_equal(again[1], first[1]) and np.array_equal(again[2], first[2])
    with pytest.raises(AssertionError):  # other texts: another key
        tk.tokenize_cached(texts + ["new"], n_workers=0, progress=False)


def test_vocab_counts_training_documents_only_and_round_trips(tmp_path):
    corpus = Corpus("t", {"train": [["a", "a", "b"]], "valid": [["c", "c", "c", "a"]]}, pretokenized=True)
    vocab, splits = numericalize(corpus, min_freq=1)
    assert "c" not in vocab and vocab[9:11] == ["a", "b"]
    assert splits["valid"][0].tolist() == [0, 0, 0, vocab.index("a")]
    assert read_vocab(write_vocab(vocab, tmp_path)) == vocab
    assert read_vocab(tmp_path) == vocab  # a run folder works too


def test_pretokenized_lines_end_with_eos_and_keep_their_unk():
    assert line_tokens(" the <unk> cat \n\n a dog \n") == ["the", tk.UNK, "cat", tk.EOS, tk.EOS, "a", "dog", tk.EOS]
    text = " = A = \n\n x y \n = = Sub = = \n z \n = B = \n w \n"
    assert [len(a) for a in wikitext_articles(text)] == [4 + 1 + 3 + 6 + 2, 4 + 2]  # sub-headings stay inside


def test_ptb_valid_trains_and_test_scores(real_data):
    d = PTB(root=str(real_data), train="valid", min_freq=1)
    d.setup()
    # Mikolov's counts, <eos> included: 73,760 validation and 82,430 test tokens.
    assert d.stats["train_tokens"] == 73760 and d.stats["valid_tokens"] == 82430 == d.stats["test_tokens"]
    assert d.stats["train_unk_pct"] > 0  # PTB's own <unk> is the vocabulary's xxunk
    assert len(d.vocab) % 8 == 0 and d.vocab[:2] == ["xxunk", "xxpad"]


def one_sentence(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.count(". ") == 0
    return msg


def test_empty_corpus_is_one_sentence(tmp_path):
    (tmp_path / "empty.csv").write_text("text\n")
    with pytest.raises(DataError) as e:
        TextFiles(path=str(tmp_path / "empty.csv"), valid_col=None).setup()
    assert "empty" in one_sentence(e)


def test_missing_text_column_is_one_sentence(tmp_path):
    (tmp_path / "t.csv").write_text("review,label\nnice,pos\n")
    with pytest.raises(DataError) as e:
        TextFiles(path=str(tmp_path / "t.csv")).setup()
    assert "'text'" in one_sentence(e) and "data.text_col" in str(e.value)


def test_bptt_zero_is_one_sentence(tmp_path):
    (tmp_path / "t.csv").write_text("text\nhello there\n")
    with pytest.raises(ConfigError) as e:
        TextFiles(path=str(tmp_path / "t.csv"), bptt=0).setup()
    assert "data.bptt=0" in one_sentence(e)


def test_folder_of_texts_gives_documents_and_a_count_ordered_vocab(tmp_path):
    for name, text in (("a.txt", "Dogs bark. Dogs run."), ("b.txt", "Cats sleep."), ("c.txt", "Dogs eat.")):
        (tmp_path / name).write_text(text)
    d = TextFiles(path=str(tmp_path), valid_pct=0.34, min_freq=1, n_workers=0, batch_size=2)
    d.setup()
    ids, offsets = d.splits["train"]
    assert d.stats["train_docs"] == 2 and d.stats["valid_docs"] == 1
    assert all(ids[o].item() == d.vocab.index(tk.BOS) for o in offsets[:-1])  # each document opens with xxbos
    counts = Counter(d.vocab[i] for i in ids.tolist())
    words = [t for t in d.vocab[len(tk.SPECIAL_TOKENS):] if t != FAKE]
    assert [counts[w] for w in words] == sorted((counts[w] for w in words), reverse=True)


def test_missing_corpus_offline_is_one_sentence(tmp_path):
    with pytest.raises(DataError) as e:
        PTB(root=str(tmp_path), download=False).setup()
    msg = one_sentence(e)
    assert "ptb.train.txt" in msg and str(tmp_path) in msg and "download" in msg
    with pytest.raises(ConfigError, match="data.train='test' must be train or valid"):
        PTB(root=str(tmp_path), train="test").setup()


def test_synthetic_lm_can_read_the_classifiers_documents():
    from fastlight.data.text.clas import SyntheticClas
    from fastlight.data.text.lm import SyntheticLM

    lm, clas = SyntheticLM(kind="planted_word", n_docs=400, batch_size=4), SyntheticClas(n_docs=400)
    lm.setup()
    clas.setup()
    assert lm.vocab == clas.vocab and torch.equal(lm.splits["train"][0], clas.splits["train"][0])


def test_imdb_folders_give_the_lessons_splits(tmp_path):
    from fastlight.data.text.sources import imdb

    root = tmp_path / "imdb" / "aclImdb"
    for sub, classes in (("train", ("neg", "pos", "unsup")), ("test", ("neg", "pos"))):
        for c in classes:
            (root / sub / c).mkdir(parents=True)
            for i in range(5):
                (root / sub / c / f"{i}_1.txt").write_text(f"{sub} {c} review {i}")
    labelled = imdb(tmp_path / "imdb", download=False, labelled=True)
    assert len(labelled.docs["train"]) == 10 and len(labelled.docs["valid"]) == 10  # test/ validates
    assert labelled.labels["valid"][:5] == ["neg"] * 5 and all("unsup" not in t for t in labelled.docs["train"])
    lm = imdb(tmp_path / "imdb", download=False, labelled=False, valid_pct=0.2)
    assert len(lm.docs["train"]) + len(lm.docs["valid"]) == 25 and len(lm.docs["valid"]) == 5  # unsup too


def test_wikitext2_files_in_place_need_no_download(tmp_path):
    from fastlight.data.text.lm import WikiText2

    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"wiki.{split}.tokens").write_text(
            f" \n = {split} one = \n \n a b <unk> \n = = Sub = = \n c \n = {split} two = \n d e \n")
    d = WikiText2(root=str(tmp_path), download=False, min_freq=1, batch_size=2, bptt=4)
    d.setup()
    assert d.stats["train_docs"] == 2 and d.vocab.index("xxunk") == 0
    first = [d.vocab[i] for i in d.splits["train"][0][:8].tolist()]
    assert first == ["xxeos", "=", "train", "one", "=", "xxeos", "xxeos", "a"]
