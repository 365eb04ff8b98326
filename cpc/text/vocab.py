"""The word vocabulary: the most frequent words of the training books, with counts.

``data/lang/vocab.txt``: one ``word count`` line per word, most frequent first (ties in
byte order of the word), at most ``size`` words. Ids: ``<pad>`` = 0, ``<unk>`` = 1, the
word on line ``i`` (from 0) = ``i + 2``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cpc.io import Pathlike, atomic_open

PAD, UNK = 0, 1
SPECIALS = 2


class VocabError(ValueError):
    """A vocabulary file that cannot be used (the message names it and the fix)."""


def count_words(sentences: Iterable[list[str]]) -> Counter[str]:
    c: Counter[str] = Counter()
    for s in sentences:
        c.update(s)
    return c


def top_words(counts: Counter[str], size: int) -> list[tuple[str, int]]:
    """The ``size`` most frequent words, ties broken by the word (deterministic)."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]


def write_vocab(path: Pathlike, words: list[tuple[str, int]]) -> None:
    with atomic_open(path) as f:
        for w, n in words:
            f.write(f"{w} {n}\n")


def read_vocab(path: Pathlike) -> list[tuple[str, int]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the vocabulary stage (1) first")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            raise VocabError(f"{path} line {i}: expected 'word count', got {line!r}")
        out.append((parts[0], int(parts[1])))
    return out


class Vocab:
    """word <-> id (see the module docstring)."""

    def __init__(self, words: list[str]) -> None:
        self.words = list(words)
        self.index = {w: i + SPECIALS for i, w in enumerate(self.words)}

    @classmethod
    def load(cls, path: Pathlike) -> Vocab:
        return cls([w for w, _ in read_vocab(path)])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def encode(self, tokens: list[str], max_tokens: int | None = None) -> np.ndarray:
        ids = np.fromiter((self.index.get(t, UNK) for t in tokens), dtype=np.int64)
        return ids[:max_tokens] if max_tokens else ids
