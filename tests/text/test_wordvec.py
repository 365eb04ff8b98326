"""Vocabulary expansion recovers a known linear map; word2vec is deterministic for a seed;
word embeddings can start from the word vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from cpc.config import ConfigError
from cpc.text.config import TextModelConfig, load_train_config
from cpc.text.model import CPCText, SentenceEncoder
from cpc.text.vocab import SPECIALS, VocabError
from cpc.text.wordvec import (
    ExpandedEmbeddings,
    fit_linear_map,
    reduce_dim,
    train_word2vec,
    vocab_vectors,
)


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


def test_vocab_vectors_rows_follow_the_vocabulary_nan_when_missing() -> None:
    wv = KeyedVectors(vector_size=2)
    wv.add_vectors(["b", "a"], np.array([[1, 2], [3, 4]], dtype=np.float32))
    t = vocab_vectors(["a", "zz", "b"], wv)
    assert np.array_equal(t[0], [3, 4]) and np.array_equal(t[2], [1, 2])
    assert np.isnan(t[1]).all()


def test_reduce_dim_keeps_the_principal_directions() -> None:
    rng = np.random.default_rng(2)
    # 3-d data that lies in a 2-d plane: 2 components keep every distance
    x = rng.normal(size=(50, 2)) @ rng.normal(size=(2, 3)) + 5.0
    x = np.vstack([x, np.full((1, 3), np.nan)]).astype(np.float32)
    r = reduce_dim(x, 2)
    assert r.shape == (51, 2) and np.isnan(r[50]).all()
    d = np.linalg.norm(x[:50, None] - x[None, :50], axis=2)
    d_r = np.linalg.norm(r[:50, None] - r[None, :50], axis=2)
    assert np.allclose(d, d_r, atol=1e-4)
    assert np.allclose(r[:50].mean(0), 0, atol=1e-5)
    assert reduce_dim(x, 3) is x and reduce_dim(x, 8) is x


def test_word_embeddings_start_from_the_word_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    table = rng.normal(size=(6, 4)).astype(np.float32)
    table[2] = np.nan  # a word without a vector keeps the uniform start
    np.save(tmp_path / "v.npy", table)
    base = dict(vocab_size=6, embed_dim=4, z_dim=3, context_dim=3, embed_init=0.1)
    cfg = TextModelConfig(**base, init_from_word_vectors=True, word_vectors=str(tmp_path / "v.npy"))
    torch.manual_seed(0)
    w = SentenceEncoder(cfg).embedding.weight.detach().numpy()
    assert np.array_equal(w[SPECIALS + 3], table[3]) and np.array_equal(w[SPECIALS], table[0])
    assert np.abs(w[SPECIALS + 2]).max() <= 0.1 and np.abs(w[1]).max() <= 0.1
    assert not w[0].any()  # <pad>
    # wider vectors: their principal directions; narrower: the rest keeps the uniform start
    wide = SentenceEncoder(TextModelConfig(**{**base, "embed_dim": 2}, **_wv(cfg)))
    ok = [0, 1, 3, 4, 5]
    assert np.allclose(
        wide.embedding.weight.detach().numpy()[[SPECIALS + i for i in ok]],
        reduce_dim(table, 2)[ok],
        atol=1e-6,
    )
    narrow = SentenceEncoder(TextModelConfig(**{**base, "embed_dim": 6}, **_wv(cfg)))
    wn = narrow.embedding.weight.detach().numpy()
    assert np.array_equal(wn[SPECIALS + 3, :4], table[3]) and np.abs(wn[:, 4:]).max() <= 0.1
    with pytest.raises(VocabError, match="vocabulary has 7 words; re-run stage 2"):
        SentenceEncoder(TextModelConfig(**{**base, "vocab_size": 7}, **_wv(cfg)))
    with pytest.raises(FileNotFoundError, match="run stage 2"):
        SentenceEncoder(TextModelConfig(**base, init_from_word_vectors=True, word_vectors="no"))


def _wv(cfg: TextModelConfig) -> dict[str, object]:
    return {"init_from_word_vectors": True, "word_vectors": cfg.word_vectors}


def test_frozen_word_embeddings_stay_while_the_encoder_trains(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.random.default_rng(4).normal(size=(40, 8)).astype(np.float32))
    cfg = TextModelConfig(
        vocab_size=40,
        embed_dim=8,
        z_dim=6,
        context_dim=5,
        init_from_word_vectors=True,
        word_vectors=str(tmp_path / "v.npy"),
        freeze_word_embeddings=True,
    )
    torch.manual_seed(5)
    model = CPCText(cfg)
    emb, conv = model.encoder.embedding.weight.clone(), model.encoder.conv.weight.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = {"tokens": torch.randint(2, 42, (4, 9, 5)), "lengths": torch.randint(1, 6, (4, 9))}
    model(batch)["loss"].backward()
    opt.step()
    assert torch.equal(model.encoder.embedding.weight, emb)
    assert not torch.equal(model.encoder.conv.weight, conv)
    with pytest.raises(ConfigError, match="only useful with model.init_from_word_vectors"):
        load_train_config(None, ["model.freeze_word_embeddings=true"])
    with pytest.raises(ConfigError, match="pass model.word_vectors="):
        load_train_config(None, ["model.init_from_word_vectors=true"])
