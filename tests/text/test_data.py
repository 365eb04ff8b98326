"""Training windows: whole windows of one book, no shared sentence within an epoch, the same
global batch for N processes as for one with N-fold accumulation, resumable positions."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cpc.text.data import SentenceWindows, ValidWindows, collate


def _books() -> list[list[np.ndarray]]:
    # sentence j of book i holds the single id 1000 * i + j (+2 past the specials)
    return [
        [np.array([1000 * i + j + 2, 7, 7][: 1 + j % 3]) for j in range(n)]
        for i, n in enumerate([40, 23, 31])
    ]


def test_windows_are_consecutive_sentences_of_one_book_and_never_overlap() -> None:
    data = SentenceWindows(_books(), window=5, batch_size=2, seed=0)
    wins = data.epoch_windows(0)
    seen = set()
    for b, s in wins:
        sent = {(b, s + k) for k in range(5)}
        assert not sent & seen
        seen |= sent
        assert s + 5 <= len(data.books[b])
    assert wins == data.epoch_windows(0) and wins != data.epoch_windows(1)


def test_collate_pads_with_zero_and_records_lengths() -> None:
    b = collate([[np.array([5, 6]), np.array([7])], [np.array([8]), np.array([9, 10, 11])]], [4, 2])
    assert b["lengths"].tolist() == [[2, 1], [1, 3]]
    assert b["groups"].tolist() == [4, 2]
    assert b["tokens"].shape == (2, 2, 3)
    assert b["tokens"][0, 1].tolist() == [7, 0, 0]


def test_batches_carry_the_book_of_each_window() -> None:
    data = SentenceWindows(_books(), window=5, batch_size=4, seed=2)
    batch, _ = next(data.batches(None, 0, 1, 1))
    first = batch["tokens"][:, 0, 0] - 2  # 1000 * book + sentence
    assert (first // 1000).tolist() == batch["groups"].tolist()


def test_global_batch_is_the_same_for_ranks_and_accumulation_and_resumes() -> None:
    data = SentenceWindows(_books(), window=5, batch_size=2, seed=1)
    one = list(itertools.islice(data.batches(None, 0, 1, 2), 3))
    r0 = list(itertools.islice(data.batches(None, 0, 2, 1), 3))
    r1 = list(itertools.islice(data.batches(None, 1, 2, 1), 3))
    for (a, _pa), (b0, _), (b1, _) in zip(one, r0, r1):
        first = torch.cat([b0["tokens"][..., :1], b1["tokens"][..., :1]])
        assert torch.equal(a["tokens"][..., :1], first)  # first token = sentence identity
    resumed = next(data.batches(one[1][1], 0, 1, 2))
    assert torch.equal(resumed[0]["tokens"], one[2][0]["tokens"])


def test_validation_windows_in_whole_batches() -> None:
    v = ValidWindows(_books(), window=5, batch_size=4, max_windows=100)
    assert len(v) == (8 + 4 + 6) // 4
    assert [i for i, _ in v.eval_batches(1, 2)] == [1, 3]
