"""Word vectors (word2vec) and skip-thoughts' vocabulary expansion.

word2vec: pretrained vectors cannot be downloaded here, so the recipe trains skip-gram vectors
on its own training books with gensim (one worker thread and a fixed string hash, so the
vectors are the same for the same seed and text); ``--word2vec PATH`` loads real pretrained
vectors instead (word2vec text or binary format, e.g. GoogleNews-vectors-negative300.bin).

Vocabulary expansion (Kiros et al. 2015, as the CPC paper uses it): a linear map ``W`` (with
a bias) from the word2vec space to the model's word-embedding space, fitted by least squares
on the words both vocabularies share. An evaluation token then gets the model's own embedding
when it is in the model's vocabulary, ``W v`` when only word2vec knows it, and is dropped when
neither does. Coverage = share of evaluation tokens with a vector, before and after expansion.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from cpc.io import Pathlike


def stable_hash(s: str) -> int:
    """A string hash that does not change between processes (Python's ``hash`` does)."""
    return zlib.crc32(s.encode("utf-8"))


def train_word2vec(
    sentences: list[list[str]], dim: int, epochs: int, seed: int, min_count: int = 1
) -> Any:
    """Skip-gram vectors (gensim KeyedVectors) of ``sentences``, deterministic for ``seed``."""
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=5,
        min_count=min_count,
        sg=1,
        negative=5,
        workers=1,
        seed=seed,
        epochs=epochs,
        hashfxn=stable_hash,
    )
    return model.wv


def load_word2vec(path: Pathlike) -> Any:
    """KeyedVectors from a gensim ``.kv`` file or a word2vec text/binary file."""
    from gensim.models import KeyedVectors

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"word2vec file {path} does not exist")
    if path.suffix == ".kv":
        return KeyedVectors.load(str(path))
    return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")


def vocab_vectors(words: list[str], wv: Any) -> np.ndarray:
    """(len(words), d) float32: row i = the vector of ``words[i]``, NaN when ``wv`` lacks it."""
    out = np.full((len(words), wv.vector_size), np.nan, dtype=np.float32)
    for i, w in enumerate(words):
        j = wv.key_to_index.get(w)
        if j is not None:
            out[i] = wv.vectors[j]
    return out


def reduce_dim(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` (n, d) with at most ``dim`` columns: unchanged when ``d <= dim``, else
    projected on their ``dim`` principal directions (centred; NaN rows stay NaN)."""
    if vectors.shape[1] <= dim:
        return vectors
    ok = ~np.isnan(vectors).any(1)
    x = vectors[ok].astype(np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    out = np.full((len(vectors), dim), np.nan, dtype=np.float32)
    out[ok] = (x - mean) @ vt[:dim].T
    return out


def fit_linear_map(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``W`` (d_src, d_dst) and bias ``b`` with ``src @ W + b ~ dst``."""
    if src.shape[0] != dst.shape[0] or src.shape[0] == 0:
        raise ValueError(f"need the same number (> 0) of rows, got {src.shape} and {dst.shape}")
    x = np.hstack([src.astype(np.float64), np.ones((src.shape[0], 1))])
    sol, *_ = np.linalg.lstsq(x, dst.astype(np.float64), rcond=None)
    return sol[:-1], sol[-1]


class ExpandedEmbeddings:
    """Model embeddings for the model's words, mapped word2vec vectors for the others."""

    def __init__(self, words: list[str], table: np.ndarray, wv: Any, specials: int) -> None:
        """``words``: the model vocabulary; ``table``: its embedding matrix (row ``i +
        specials`` is word ``i``); ``wv``: word2vec KeyedVectors."""
        self.index = {w: i + specials for i, w in enumerate(words)}
        self.table = table
        self.wv = wv
        shared = [w for w in words if w in wv.key_to_index]
        if len(shared) < 2:
            raise ValueError("word2vec and the model share fewer than 2 words: cannot fit a map")
        self.num_shared = len(shared)
        src = np.stack([wv[w] for w in shared])
        dst = table[[self.index[w] for w in shared]]
        self.w, self.b = fit_linear_map(src, dst)
        pred = src @ self.w + self.b
        ss_res = float(((pred - dst) ** 2).sum())
        ss_tot = float(((dst - dst.mean(0)) ** 2).sum())
        self.r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
        logging.info(f"vocabulary expansion: {len(shared)} shared words, R^2 {self.r2:.3f}")

    def vectors(self, tokens: list[str]) -> np.ndarray:
        """(n, E) vectors of the tokens that have one (in order)."""
        rows = []
        for t in tokens:
            if t in self.index:
                rows.append(self.table[self.index[t]])
            elif t in self.wv.key_to_index:
                rows.append(self.wv[t] @ self.w + self.b)
        if not rows:
            return np.zeros((0, self.table.shape[1]), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)

    def coverage(self, sentences: list[list[str]]) -> dict[str, float | int]:
        """Share of tokens with a model embedding (before) and with any vector (after)."""
        n = before = after = 0
        for s in sentences:
            for t in s:
                n += 1
                if t in self.index:
                    before += 1
                    after += 1
                elif t in self.wv.key_to_index:
                    after += 1
        return {"tokens": n, "before": before / max(n, 1), "after": after / max(n, 1)}
