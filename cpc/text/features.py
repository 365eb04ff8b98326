"""Sentence features of evaluation items for each row of the results table.

- ``cpc``: the trained encoder's z (or the GRU's c after the one sentence, or both), its word
  embeddings extended by vocabulary expansion (:class:`cpc.text.wordvec.ExpandedEmbeddings`);
- ``random``: the same architecture with its random initial weights (same seed), expanded the
  same way;
- ``w2v_mean``: the mean of the word2vec vectors of the item's tokens;
- ``bow``: bag of words over the model vocabulary (token counts, sparse).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from cpc.text.model import CPCText
from cpc.text.vocab import SPECIALS, Vocab
from cpc.text.wordvec import ExpandedEmbeddings

FEATURE_TYPES = ("cpc", "random", "w2v_mean", "bow")


@torch.no_grad()
def encoder_features(
    model: CPCText,
    expanded: ExpandedEmbeddings,
    sentences: list[list[str]],
    which: Literal["z", "c", "zc"] = "z",
    batch_size: int = 256,
) -> np.ndarray:
    """(N, dim) features of tokenised items through ``model`` with expanded embeddings."""
    model.eval()
    out = []
    for i in tqdm(range(0, len(sentences), batch_size), desc="encoding", mininterval=5):
        vecs = [expanded.vectors(s) for s in sentences[i : i + batch_size]]
        lengths = torch.tensor([len(v) for v in vecs])
        emb = torch.zeros(len(vecs), max(1, int(lengths.max())), expanded.table.shape[1])
        for j, v in enumerate(vecs):
            emb[j, : len(v)] = torch.from_numpy(v)
        z = model.encoder.from_embeddings(emb, lengths)
        parts = []
        if which in ("z", "zc"):
            parts.append(z)
        if which in ("c", "zc"):
            parts.append(model.context(z.unsqueeze(1))[:, 0])
        out.append(torch.cat(parts, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


def expand(model: CPCText, vocab: Vocab, wv: Any) -> ExpandedEmbeddings:
    table = model.encoder.embedding.weight.detach().numpy()
    return ExpandedEmbeddings(vocab.words, table, wv, SPECIALS)


def w2v_mean(wv: Any, sentences: list[list[str]]) -> np.ndarray:
    out = np.zeros((len(sentences), wv.vector_size), dtype=np.float32)
    for i, s in enumerate(sentences):
        vs = [wv[t] for t in s if t in wv.key_to_index]
        if vs:
            out[i] = np.mean(vs, axis=0)
    return out


def bag_of_words(vocab: Vocab, sentences: list[list[str]]) -> Any:
    from scipy.sparse import csr_matrix

    rows, cols = [], []
    for i, s in enumerate(sentences):
        for t in s:
            j = vocab.index.get(t)
            if j is not None:
                rows.append(i)
                cols.append(j - SPECIALS)
    data = np.ones(len(rows), dtype=np.float32)
    m = csr_matrix((data, (rows, cols)), shape=(len(sentences), len(vocab)))
    m.sum_duplicates()
    return m
