"""Synthetic twins with planted structure, for tests.

Language model: every document is

    xxbos key<k> S_1 ... S_n end<k> xxeos,     S = det noun verb det noun .

with det in {the, a}, noun in {cat, dog, bird, fish}, verb in {sees, likes, eats}, k uniform in
`n_keys`. `end<k>` repeats the document's key 6n + 1 tokens later: the long-range dependency.
Everything else is either fixed by the position or drawn uniformly, so the best achievable
cross-entropy is known in closed form (`ideal_perplexity`); a model that forgets the key pays
log(n_keys) more on every `end<k>` (`forgetful_perplexity`).

Classifier: filler words drawn uniformly, 8 to 60 of them, with exactly one planted word,
`good` (class pos) or `bad` (class neg), at a random place; nothing else differs by class.
"""

from __future__ import annotations

import math

import numpy as np

from fastlight.data.text.sources import Corpus
from fastlight.data.text.tokenizer import BOS, EOS

DETS, NOUNS, VERBS = ["the", "a"], ["cat", "dog", "bird", "fish"], ["sees", "likes", "eats"]
FILLER = ["movie", "plot", "actor", "scene", "the", "a", "was", "and", "it", "of", "to", "in", "this",
          "film", "story", "with", "very", "quite", "some", "music"]


def _sentence(rng: np.random.Generator) -> list[str]:
    return [DETS[rng.integers(2)], NOUNS[rng.integers(4)], VERBS[rng.integers(3)],
            DETS[rng.integers(2)], NOUNS[rng.integers(4)], "."]


def grammar_docs(n_docs: int, n_keys: int = 4, n_sentences: int = 3, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        k = int(rng.integers(n_keys))
        body = [w for _ in range(n_sentences) for w in _sentence(rng)]
        docs.append([BOS, f"key{k}", *body, f"end{k}", EOS])
    return docs


def _doc_entropy(n_keys: int, n_sentences: int) -> tuple[float, int]:
    """(nats of a document's tokens under the true process, tokens per document)."""
    sentence = 2 * math.log(len(DETS)) + 2 * math.log(len(NOUNS)) + math.log(len(VERBS))
    return math.log(n_keys) + n_sentences * sentence, 6 * n_sentences + 4


def ideal_perplexity(n_keys: int = 4, n_sentences: int = 3) -> float:
    """exp(cross-entropy per token) of a model that knows the grammar, in a long stream of
    shuffled documents (xxbos after xxeos and the key's end token cost nothing)."""
    nats, n = _doc_entropy(n_keys, n_sentences)
    return math.exp(nats / n)


def forgetful_perplexity(n_keys: int = 4, n_sentences: int = 3) -> float:
    """The same model without memory of the key: a uniform guess at `end<k>`."""
    nats, n = _doc_entropy(n_keys, n_sentences)
    return math.exp((nats + math.log(n_keys)) / n)


def grammar_corpus(n_docs: int = 600, n_keys: int = 4, n_sentences: int = 3, valid_pct: float = 0.2,
                   seed: int = 0) -> Corpus:
    docs = grammar_docs(n_docs, n_keys, n_sentences, seed)
    cut = n_docs - max(1, int(valid_pct * n_docs))
    return Corpus("synthetic", {"train": docs[:cut], "valid": docs[cut:]}, pretokenized=True)


def planted_word_corpus(n_docs: int = 400, valid_pct: float = 0.2, min_len: int = 8, max_len: int = 60,
                        seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    docs, labels = [], []
    for _ in range(n_docs):
        words = [FILLER[i] for i in rng.integers(len(FILLER), size=int(rng.integers(min_len, max_len + 1)))]
        pos = bool(rng.integers(2))
        words.insert(int(rng.integers(len(words) + 1)), "good" if pos else "bad")
        docs.append([BOS, *words])
        labels.append("pos" if pos else "neg")
    cut = n_docs - max(1, int(valid_pct * n_docs))
    return Corpus("synthetic", {"train": docs[:cut], "valid": docs[cut:]},
                  {"train": labels[:cut], "valid": labels[cut:]}, pretokenized=True)
