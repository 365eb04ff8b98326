"""Training data: windows of consecutive sentences of one book, as token-id tensors.

Prepared data (``data_dir``): ``text/train.txt`` and ``text/valid.txt`` (stage 0: one
tokenised sentence per line, an empty line between books) and ``lang/vocab.txt`` (stage 1).

A window is ``T = context_sentences + K`` consecutive sentences of one book. Epoch ``e``
cuts every book into non-overlapping windows from an offset in ``[0, T)`` drawn per book,
and shuffles all windows, both from ``(seed, e)`` (windows of one batch never share a
sentence, so a positive is never also a negative copy of itself). Global batch ``s`` of an
epoch is windows ``[s * G, (s + 1) * G)`` with ``G = batch_size * world_size * grad_accum``;
rank ``r`` takes its ``batch_size * grad_accum`` consecutive rows, so N processes and one
process with ``grad_accum = N`` see the same global batch. Sentences are cut to
``max_tokens`` and padded (id 0) to the longest sentence of the rank's batch.

The held-out split: windows of the validation books from their first sentence, at most
``valid_max_windows``, in whole batches; batch ``i`` goes to rank ``i % world_size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc.io import sha256_file
from cpc.text.config import TextTrainConfig
from cpc.text.corpus import read_sentences
from cpc.text.vocab import Vocab, VocabError

Book = list[np.ndarray]


def encode_books(path: Path, vocab: Vocab, max_tokens: int) -> list[Book]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run stage 0 (corpus) first")
    return [[vocab.encode(s, max_tokens) for s in b] for b in read_sentences(path)]


def collate(
    windows: list[list[np.ndarray]], books: list[int] | None = None
) -> dict[str, torch.Tensor]:
    """(B, T) sentences -> ``tokens`` (B, T, L) padded with 0, ``lengths`` (B, T) and
    ``groups`` (B,): the book of each window (for the ``same_group`` negatives)."""
    b, t = len(windows), len(windows[0])
    lengths = np.array([[len(s) for s in w] for w in windows], dtype=np.int64)
    tokens = np.zeros((b, t, max(1, int(lengths.max()))), dtype=np.int64)
    for i, w in enumerate(windows):
        for j, s in enumerate(w):
            tokens[i, j, : len(s)] = s
    groups = torch.tensor(books if books is not None else [0] * b, dtype=torch.int64)
    return {
        "tokens": torch.from_numpy(tokens),
        "lengths": torch.from_numpy(lengths),
        "groups": groups,
    }


class SentenceWindows:
    """The training stream (a :class:`cpc.trainer.TrainData`)."""

    def __init__(self, books: list[Book], window: int, batch_size: int, seed: int) -> None:
        self.books = [b for b in books if len(b) >= window]
        if not self.books:
            raise VocabError(f"no training book has {window} sentences (one window)")
        self.window, self.batch_size, self.seed = window, batch_size, seed

    def epoch_windows(self, epoch: int) -> list[tuple[int, int]]:
        """(book, first sentence) of every window of ``epoch``, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        out = []
        for i, b in enumerate(self.books):
            off = int(rng.integers(self.window))
            n = (len(b) - off) // self.window
            out += [(i, off + j * self.window) for j in range(n)]
        order = rng.permutation(len(out))
        return [out[k] for k in order]

    def batches(
        self, position: dict[str, int] | None, rank: int, world_size: int, grad_accum: int
    ) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, int]]]:
        pos = position or {"epoch": 0, "batch": 0}
        epoch, step = int(pos["epoch"]), int(pos["batch"])
        per_rank = self.batch_size * grad_accum
        g = per_rank * world_size
        while True:
            wins = self.epoch_windows(epoch)
            n = len(wins) // g
            if n == 0:
                raise VocabError(
                    f"an epoch has {len(wins)} windows, fewer than one global batch of {g}; "
                    "lower data.batch_size"
                )
            while step < n:
                rows = wins[step * g + rank * per_rank : step * g + (rank + 1) * per_rank]
                batch = collate(
                    [self.books[i][s : s + self.window] for i, s in rows], [i for i, _ in rows]
                )
                step += 1
                yield batch, {"epoch": epoch, "batch": step}
            epoch, step = epoch + 1, 0


class ValidWindows:
    """The held-out split (a :class:`cpc.trainer.ValidData`)."""

    def __init__(self, books: list[Book], window: int, batch_size: int, max_windows: int) -> None:
        wins = [b[j : j + window] for b in books for j in range(0, len(b) - window + 1, window)]
        n = min(len(wins), max_windows) // batch_size
        self.batches = [collate(wins[i * batch_size : (i + 1) * batch_size]) for i in range(n)]

    def __len__(self) -> int:
        return len(self.batches)

    def eval_batches(self, rank: int, world_size: int) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in range(rank, len(self.batches), world_size):
            yield i, self.batches[i]


def check_vocab_size(cfg: TextTrainConfig, vocab: Vocab, path: Path) -> None:
    if len(vocab) != cfg.model.vocab_size:
        raise VocabError(
            f"{path} has {len(vocab)} words but model.vocab_size is {cfg.model.vocab_size}; "
            f"pass model.vocab_size={len(vocab)} (run.sh does this from the vocabulary stage)"
        )


def data_identity(data_dir: Path) -> dict[str, str]:
    """The training data's signature: sha256 of the sentence files and the vocabulary."""
    files = ("text/train.txt", "text/valid.txt", "lang/vocab.txt")
    return {f: sha256_file(data_dir / f) for f in files if (data_dir / f).is_file()}
