"""Triphone ABX (cpc/audio/abx.py) on cases whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc.audio.abx import AbxConfig, abx_error, abx_scores, dtw_batch, make_items

SIL, B, AA, IY, T = 0, 7, 1, 19, 32  # class ids (SIL, B, AA, IY, T)


def _dtw_reference(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    c = np.arccos(np.clip(a @ b.T, -1, 1)) / np.pi
    n, m = c.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = c[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return acc[n, m] / max(n, m)


def test_batched_dtw_equals_the_textbook_recurrence() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(int(rng.integers(1, 9)), 3)) for _ in range(8)]
    pairs = [(i, j) for i in range(8) for j in range(8)]
    n = max(len(s) for s in seqs)

    def pad(idx: list[int]) -> torch.Tensor:
        out = torch.zeros(len(idx), n, 3, dtype=torch.float64)
        for k, i in enumerate(idx):
            s = seqs[i] / np.linalg.norm(seqs[i], axis=1, keepdims=True)
            out[k, : len(s)] = torch.from_numpy(s)
        return out

    a, b = pad([p[0] for p in pairs]), pad([p[1] for p in pairs])
    la = torch.tensor([len(seqs[p[0]]) for p in pairs])
    lb = torch.tensor([len(seqs[p[1]]) for p in pairs])
    got = dtw_batch(a, la, b, lb).numpy()
    want = [_dtw_reference(seqs[i], seqs[j]) for i, j in pairs]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-7)
    assert got[0] == pytest.approx(0.0, abs=1e-6)  # a sequence against itself


def _utterance(centers: list[int], feat_of, rng: np.random.Generator) -> np.ndarray:
    """Labels SIL B c T SIL B c T ... SIL with random segment lengths (2-5 frames)."""
    labels = [SIL] * 3
    for c in centers:
        for p in (B, c, T, SIL):
            labels += [p] * int(rng.integers(2, 6))
    labels = np.array(labels)
    return np.stack([feat_of(int(p)) for p in labels]), labels


def _corpus(feat_of, speakers: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(*_utterance([AA, IY, AA, IY, AA], feat_of, rng), f"spk{s}") for s in range(speakers)]


def test_abx_zero_when_centers_are_distinct_and_half_when_identical() -> None:
    onehot = np.eye(41, dtype=np.float32)
    scores = abx_scores(_corpus(lambda p: onehot[p]), AbxConfig(seed=1))
    # per speaker 5 x (SIL-B-c, B-c-T, c-T-SIL) items; only B-c-T share a context with
    # another center: 3 B-AA-T and 2 B-IY-T
    assert scores["items"] == 30 and scores["items_too_long"] == 0
    assert scores["within"]["error"] == 0.0 and scores["across"]["error"] == 0.0
    # within: per speaker, AA/IY: 3*2 (a,x) x 2 b = 12, IY/AA: 2*1 x 3 = 6 -> 18 x 2 speakers
    assert scores["within"]["triplets"] == 36 and scores["within"]["center_pairs"] == 2
    # across: A, B from one speaker, X from the other: AA: 3*2*3=18, IY: 2*3*2=12, x 2
    assert scores["across"]["triplets"] == 60

    # the two centers look the same: every distance ties -> exactly one half
    same = np.eye(41, dtype=np.float32)
    same[IY] = same[AA]
    scores = abx_scores(_corpus(lambda p: same[p]), AbxConfig(seed=1))
    assert scores["within"]["error"] == 0.5 and scores["across"]["error"] == 0.5


def test_abx_caps_and_seeds_the_sample() -> None:
    onehot = np.eye(41, dtype=np.float32)
    rng = np.random.default_rng(3)
    utts = [(*_utterance([AA, IY] * 6, lambda p: onehot[p] + 0.3 * rng.random(41), rng), "s")]
    items = make_items(utts, max_frames=60)
    cfg = AbxConfig(max_per_cell=50, max_triplets=70, seed=5)
    a, b = abx_error(items, False, cfg), abx_error(items, False, cfg)
    assert a["triplets"] == 70 and a["error"] == b["error"]
    assert abx_error(items, False, AbxConfig(max_per_cell=50, seed=6))["triplets"] == 100
    short = make_items(utts, max_frames=6)  # B c T spans 6-15 frames: most are too long
    assert short.too_long + len(short.center) == len(items.center) and short.too_long > 0
