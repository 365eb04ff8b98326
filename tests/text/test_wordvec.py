"""Vocabulary expansion recovers a known linear map; word2vec is deterministic for a seed."""

from __future__ import annotations

import numpy as np
from gensim.models import KeyedVectors

from cpc.text.wordvec import ExpandedEmbeddings, fit_linear_map, train_word2vec


def test_fit_linear_map_recovers_a_known_map() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(200, 7))
    w, b = rng.normal(size=(7, 4)), rng.normal(size=4)
    w_hat, b_hat = fit_linear_map(src, src @ w + b)
    assert np.allclose(w_hat, w, atol=1e-10) and np.allclose(b_hat, b, atol=1e-10)


def test_expansion_maps_unseen_words_and_reports_coverage() -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30)]
    extra = ["new1", "new2"]
    wv = KeyedVectors(vector_size=5)
    wv.add_vectors(words + extra, rng.normal(size=(32, 5)).astype(np.float32))
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    table = np.zeros((32, 3), dtype=np.float32)  # 2 special rows, then the 30 words
    table[2:] = wv[words] @ w + b
    exp = ExpandedEmbeddings(words, table, wv, specials=2)
    assert exp.r2 > 0.999999
    v = exp.vectors(["w3", "new1", "unknown", "new2"])
    assert v.shape == (3, 3)  # "unknown" has no vector at all: dropped
    assert np.allclose(v[0], table[5])
    assert np.allclose(v[1], wv["new1"] @ w + b, atol=1e-4)
    assert np.allclose(v[2], wv["new2"] @ w + b, atol=1e-4)
    cov = exp.coverage([["w1", "new1"], ["unknown", "w2"]])
    assert cov == {"tokens": 4, "before": 0.5, "after": 0.75}


def test_word2vec_is_deterministic_for_a_seed() -> None:
    sents = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "sat", "on", "a", "log"]] * 20
    a = train_word2vec(sents, dim=8, epochs=2, seed=3)
    b = train_word2vec(sents, dim=8, epochs=2, seed=3)
    c = train_word2vec(sents, dim=8, epochs=2, seed=4)
    assert a.index_to_key == b.index_to_key
    assert np.array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)
