"""The CPC sentence model (paper section 3.3).

- ``SentenceEncoder`` (g_enc): word embeddings -> 1D convolution (kernel > 1, centred, zero
  padding at the sentence edges) -> ReLU -> mean over the sentence's real tokens -> z. Padding
  positions are zeroed before the convolution and excluded from the mean, so a sentence's z does
  not depend on how much padding its batch needed.
- a GRU over the z of consecutive sentences -> c (causal: c_t sees sentences 0..t only);
- InfoNCE (:class:`cpc.infonce.InfoNCE`): every c_t predicts z_{t+1..t+K}; with
  ``num_negatives = 0`` the candidates are all sentences of the batch at all time steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpc.infonce import InfoNCE
from cpc.text.config import TextModelConfig
from cpc.text.vocab import PAD, SPECIALS, UNK, VocabError
from cpc.text.wordvec import reduce_dim


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (N, L, D) over the first ``lengths[n]`` positions of each row (a row of
    length 0 gives zeros)."""
    mask = torch.arange(x.shape[1], device=x.device).view(1, -1) < lengths.view(-1, 1)
    total = (x * mask.unsqueeze(-1).to(x.dtype)).sum(1)
    return total / lengths.clamp_min(1).view(-1, 1).to(x.dtype)


def load_word_vectors(weight: torch.Tensor, path: str) -> None:
    """Word ``i``'s row (``i + SPECIALS``) of ``weight`` takes row ``i`` of the ``.npy`` table
    at ``path`` (stage 2's ``vocab_vectors.npy``), reduced to the embedding width by PCA when
    wider (when narrower, the remaining columns keep their initial values); rows that are NaN
    (words without a vector) and the special rows keep their initial values."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"model.word_vectors {p} does not exist; run stage 2 (word vectors) first"
        )
    table = np.load(p)
    rows = weight.shape[0] - SPECIALS
    if table.ndim != 2 or table.shape[0] != rows:
        raise VocabError(
            f"{p} has shape {table.shape} but the vocabulary has {rows} words; re-run stage 2 "
            "with the current vocabulary"
        )
    table = reduce_dim(table, weight.shape[1])
    ok = ~np.isnan(table).any(1)
    idx = torch.from_numpy(np.nonzero(ok)[0] + SPECIALS)
    weight[idx, : table.shape[1]] = torch.from_numpy(table[ok]).to(weight.dtype)


def drop_words(
    tokens: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``tokens`` with each real token (not ``<pad>``) replaced by ``<unk>`` with probability
    ``p``, drawn from ``generator`` (so a resumed run drops the same words)."""
    u = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    return torch.where((u < p) & (tokens != PAD), torch.full_like(tokens, UNK), tokens)


class SentenceEncoder(nn.Module):
    """Token ids (N, L) + lengths (N,) -> sentence embeddings z (N, z_dim)."""

    def __init__(self, cfg: TextModelConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size + SPECIALS, cfg.embed_dim, padding_idx=PAD)
        # skip-thoughts' initialisation (uniform +-0.1): small next to what training moves
        # (torch's default N(0, 1) barely changes in a short run)
        nn.init.uniform_(self.embedding.weight, -cfg.embed_init, cfg.embed_init)
        with torch.no_grad():
            if cfg.init_from_word_vectors:
                load_word_vectors(self.embedding.weight, cfg.word_vectors)
            self.embedding.weight[PAD].zero_()
        self.embedding.weight.requires_grad_(not cfg.freeze_word_embeddings)
        self.conv = nn.Conv1d(
            cfg.embed_dim, cfg.z_dim, cfg.kernel_size, padding=cfg.kernel_size // 2
        )

    def from_embeddings(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """z from word vectors ``emb`` (N, L, E) (vocabulary expansion feeds mapped vectors
        here); positions at or past ``lengths`` are ignored.

        The convolution is computed as one matrix product over the real tokens only (each
        row: the token's window of ``kernel_size`` word vectors, zeros past the sentence's
        edges), with ``self.conv``'s weights: the same values as ``Conv1d`` on zero-padded
        sentences, at a fraction of the cost of its CPU backward pass, and padding never
        enters the mean."""
        n, length, e = emb.shape
        k = self.conv.kernel_size[0]
        mask = torch.arange(length, device=emb.device).view(1, -1) < lengths.view(-1, 1)
        emb = emb * mask.unsqueeze(-1).to(emb.dtype)
        padded = F.pad(emb, (0, 0, k // 2, k // 2))
        cols = torch.cat([padded[:, j : j + length] for j in range(k)], dim=2)  # (N, L, k*E)
        idx = mask.reshape(-1).nonzero().squeeze(1)
        rows = cols.reshape(n * length, k * e).index_select(0, idx)
        weight = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, k * e)
        h = torch.relu(F.linear(rows, weight, self.conv.bias))
        total = h.new_zeros(n, h.shape[1]).index_add_(0, idx // length, h)
        return total / lengths.clamp_min(1).view(-1, 1).to(h.dtype)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.from_embeddings(self.embedding(tokens), lengths)


class CPCText(nn.Module):
    """Encoder + GRU + InfoNCE; ``forward(batch, generator)`` for :class:`cpc.trainer.Trainer`
    with ``batch = {"tokens": (B, T, L) int64, "lengths": (B, T) int64, "groups": (B,) int64}``
    (``groups``: the book of each window, used by the ``same_group`` negatives)."""

    def __init__(self, cfg: TextModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SentenceEncoder(cfg)
        self.gru = nn.GRU(cfg.z_dim, cfg.context_dim, batch_first=True)
        self.loss = InfoNCE(
            cfg.context_dim, cfg.z_dim, cfg.prediction_steps, cfg.num_negatives, cfg.negatives
        )
        self.head = None
        if cfg.target_head == "mlp":
            self.head = nn.Sequential(
                nn.Linear(cfg.z_dim, cfg.z_dim), nn.ReLU(), nn.Linear(cfg.z_dim, cfg.z_dim)
            )

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """z (B, T, z_dim) of every sentence of (B, T, L) windows."""
        b, t, n = tokens.shape
        return self.encoder(tokens.reshape(b * t, n), lengths.reshape(b * t)).view(b, t, -1)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """c (B, T, context_dim): the GRU over the sentences of each window."""
        return self.gru(z)[0]

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        tokens, lengths = batch["tokens"], batch["lengths"]
        if self.training and self.cfg.word_dropout > 0:
            tokens = drop_words(tokens, self.cfg.word_dropout, generator)
        z = self.encode(tokens, lengths)
        target = z if self.head is None else self.head(z)
        return self.loss(self.context(z), target, groups=batch.get("groups"), generator=generator)


def build_model(cfg: TextModelConfig) -> CPCText:
    return CPCText(cfg)
