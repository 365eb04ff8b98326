"""Triphone ABX discriminability (the Libri-light / ZeroSpeech protocol) on frame features.

Items come from frame-level phone labels: every phone segment (a run of one class, not SIL)
with a segment before and after it is a triphone item ``prev-center-next`` spanning all three
segments (the frames of the Libri-light item files' onset..offset); items longer than
``max_frames`` are left out (counted).

A triplet (A, B, X) has A and X of one center phone, B of another, all three with the same
context (prev, next) ("within context"):

- within speaker: A, B and X from one speaker;
- across speaker: A and B from one speaker, X from another.

The triplet errs when X is closer to B than to A (a tie counts one half). Distance: dynamic
time warping of the two items' frames with the angular distance ``arccos(cos(u, v)) / pi``
per frame pair (0 = same direction, 1 = opposite), steps (1,0), (0,1), (1,1), the path's
summed cost divided by the number of steps of the longest side pairs (Libri-light normalises
by path length; here by ``max(n, m)``, the shortest possible path length).

Scores are averaged as in Libri-light: over the triplets of a cell (center pair, context,
speaker(s)), then over contexts and speakers, then over the ordered center pairs.

Sampling: a cell keeps at most ``max_per_cell`` triplets (a seeded sample), and at most
``max_triplets`` triplets in all are kept (a seeded sample of the cells' triplets), so the
cost is bounded: every distance is computed once for the sampled (A, X) and (B, X) pairs,
batched (DTW runs over all pairs of a chunk at once; no Python loop per triplet).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from cpc.audio.constants import PHONE_TO_ID, PHONES

SIL_ID = PHONE_TO_ID["SIL"]


@dataclass
class AbxConfig:
    max_frames: int = 60  # longest triphone item kept (frames)
    max_per_cell: int = 200  # triplets kept per cell at most
    max_triplets: int = 20_000  # triplets kept in all at most (each mode)
    chunk: int = 1024  # item pairs per batched DTW
    seed: int = 42


@dataclass
class Items:
    """Triphone items: feature rows ``feats[start[i]:start[i] + length[i]]``."""

    feats: torch.Tensor  # (N_frames + 1, D), rows L2-normalised, then one zero row
    start: np.ndarray
    length: np.ndarray
    center: np.ndarray
    context: np.ndarray  # (N, 2): prev, next
    speaker: np.ndarray  # int speaker index
    too_long: int = 0


def make_items(utterances: list[tuple[np.ndarray, np.ndarray, str]], max_frames: int = 60) -> Items:
    """Triphone items of ``(features (T, D), labels (T,), speaker)`` utterances."""
    from cpc.audio.align import runs

    rows: list[np.ndarray] = []
    start, length, center, context, speaker = [], [], [], [], []
    speakers: dict[str, int] = {}
    offset = 0
    too_long = 0
    for feats, labels, spk in utterances:
        n = min(len(feats), len(labels))
        feats = np.asarray(feats[:n], dtype=np.float32)
        s, ln, v = runs(np.asarray(labels[:n]))
        sid = speakers.setdefault(spk, len(speakers))
        for k in range(1, len(v) - 1):
            if v[k] == SIL_ID:
                continue
            a, b = int(s[k - 1]), int(s[k + 1] + ln[k + 1])
            if b - a > max_frames:
                too_long += 1
                continue
            start.append(offset + a)
            length.append(b - a)
            center.append(int(v[k]))
            context.append((int(v[k - 1]), int(v[k + 1])))
            speaker.append(sid)
        rows.append(feats)
        offset += n
    x = torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, 1)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    x = torch.cat([x, x.new_zeros(1, x.shape[1])])  # the padding row of _gather
    return Items(
        x,
        np.array(start, dtype=np.int64),
        np.array(length, dtype=np.int64),
        np.array(center, dtype=np.int64),
        np.array(context, dtype=np.int64).reshape(-1, 2),
        np.array(speaker, dtype=np.int64),
        too_long,
    )


def dtw_batch(a: torch.Tensor, la: torch.Tensor, b: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """DTW distances of P pairs of zero-padded sequences of unit vectors.

    ``a`` (P, N, D), ``b`` (P, M, D); ``la``/``lb`` their true lengths (P,). Frame cost:
    ``arccos(a . b) / pi``; returns the best path's cost divided by ``max(la, lb)`` (P,).
    The recurrence runs over the N + M - 1 anti-diagonals, each step vectorised over all
    pairs and the diagonal's cells; padding never reaches a cell inside a pair's lengths.
    """
    cos = torch.bmm(a, b.transpose(1, 2)).clamp(-1.0, 1.0)
    cost = torch.arccos(cos) / torch.pi  # (P, N, M)
    P, N, M = cost.shape
    # acc[:, i, j]: best cost of a path ending at frame pair (i-1, j-1); row/column 0 = inf
    acc = torch.full((P, N + 1, M + 1), float("inf"), dtype=cost.dtype)
    acc[:, 0, 0] = 0.0
    for d in range(2, N + M + 1):  # one anti-diagonal i + j = d at a time
        i = torch.arange(max(1, d - M), min(N, d - 1) + 1)
        j = d - i
        best = torch.minimum(
            torch.minimum(acc[:, i - 1, j], acc[:, i, j - 1]), acc[:, i - 1, j - 1]
        )
        acc[:, i, j] = best + cost[:, i - 1, j - 1]
    idx = torch.arange(P)
    return acc[idx, la, lb] / torch.maximum(la, lb).to(cost.dtype)


def _pair_distances(items: Items, pairs: np.ndarray, chunk: int) -> np.ndarray:
    """DTW distance of each item pair (rows of ``pairs``), batched by similar lengths."""
    out = np.empty(len(pairs), dtype=np.float64)
    if len(pairs) == 0:
        return out
    la_all, lb_all = items.length[pairs[:, 0]], items.length[pairs[:, 1]]
    order = np.lexsort((lb_all, la_all))
    dim = items.feats.shape[1]
    for k in range(0, len(order), chunk):
        sel = order[k : k + chunk]
        la, lb = la_all[sel], lb_all[sel]
        n, m = int(la.max()), int(lb.max())
        a = _gather(items, pairs[sel, 0], n, dim)
        b = _gather(items, pairs[sel, 1], m, dim)
        out[sel] = dtw_batch(a, torch.from_numpy(la), b, torch.from_numpy(lb)).double().numpy()
    return out


def _gather(items: Items, idx: np.ndarray, n: int, dim: int) -> torch.Tensor:
    """(len(idx), n, D) frames of the items, zero rows past each item's length (the last row
    of ``items.feats`` is a zero row)."""
    lengths = torch.from_numpy(items.length[idx])
    pos = torch.from_numpy(items.start[idx])[:, None] + torch.arange(n)[None, :]
    pos = torch.where(torch.arange(n)[None, :] < lengths[:, None], pos, items.feats.shape[0] - 1)
    return items.feats[pos]


def _triplets(
    items: Items, across: bool, cfg: AbxConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Sampled triplets (a, b, x) (T, 3), their cell ids (T,) and the cells: (c1, c2,
    context, speaker of A and B, speaker of X)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in range(len(items.center)):
        key = (int(items.context[i, 0]), int(items.context[i, 1]), int(items.speaker[i]))
        groups[key].append(i)
    by_ctx: dict[tuple, dict[int, dict[int, np.ndarray]]] = defaultdict(dict)
    for (p, n, s), idx in groups.items():
        arr = np.array(idx)
        by_spk = by_ctx[(p, n)].setdefault(s, {})
        for c in np.unique(items.center[arr]):
            by_spk[int(c)] = arr[items.center[arr] == c]
    trip: list[np.ndarray] = []
    cells: list[tuple] = []
    for ctx, spks in sorted(by_ctx.items()):
        for s, centers in sorted(spks.items()):
            xs_by_spk = (
                [(s, centers)]
                if not across
                else [(s2, c2) for s2, c2 in sorted(spks.items()) if s2 != s]
            )
            for c1, a_idx in sorted(centers.items()):
                for c2, b_idx in sorted(centers.items()):
                    if c1 == c2:
                        continue
                    for sx, xcenters in xs_by_spk:
                        if c1 not in xcenters:
                            continue
                        x_idx = xcenters[c1]
                        aa, bb, xx = np.meshgrid(a_idx, b_idx, x_idx, indexing="ij")
                        t = np.stack([aa.ravel(), bb.ravel(), xx.ravel()], 1)
                        t = t[t[:, 0] != t[:, 2]]
                        if len(t) == 0:
                            continue
                        if len(t) > cfg.max_per_cell:
                            t = t[rng.choice(len(t), cfg.max_per_cell, replace=False)]
                        trip.append(t)
                        cells.append((c1, c2, ctx, s, sx))
    if not trip:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), cells
    cell_id = np.concatenate([np.full(len(t), i) for i, t in enumerate(trip)])
    t = np.concatenate(trip)
    if len(t) > cfg.max_triplets:
        keep = np.sort(rng.choice(len(t), cfg.max_triplets, replace=False))
        t, cell_id = t[keep], cell_id[keep]
    return t, cell_id, cells


def abx_error(items: Items, across: bool, cfg: AbxConfig | None = None) -> dict[str, Any]:
    """The ABX error rate (0..1) of ``items`` within or across speakers, with its counts."""
    cfg = cfg or AbxConfig()
    rng = np.random.default_rng(cfg.seed)
    t0 = time.time()
    trip, cell_id, cells = _triplets(items, across, cfg, rng)
    if len(trip) == 0:
        return {"error": None, "triplets": 0, "cells": 0, "seconds": 0.0}
    pairs = np.concatenate([trip[:, [0, 2]], trip[:, [1, 2]]])
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    dist = _pair_distances(items, uniq, cfg.chunk)[inverse.ravel()]
    d_ax, d_bx = dist[: len(trip)], dist[len(trip) :]
    err = (d_ax > d_bx).astype(np.float64) + 0.5 * (d_ax == d_bx)
    # mean per cell -> mean over (context, speakers) per center pair -> mean over pairs
    used = np.unique(cell_id)
    cell_err = np.bincount(cell_id, weights=err)[used] / np.bincount(cell_id)[used]
    by_pair: dict[tuple[int, int], list[float]] = defaultdict(list)
    for cid, e in zip(used, cell_err):
        by_pair[cells[cid][:2]].append(float(e))
    score = float(np.mean([np.mean(v) for v in by_pair.values()]))
    seconds = time.time() - t0
    return {
        "error": score,
        "triplets": int(len(trip)),
        "cells": int(len(used)),
        "center_pairs": len(by_pair),
        "distances": int(len(uniq)),
        "seconds": round(seconds, 2),
        "seconds_per_1000_triplets": round(1000 * seconds / len(trip), 4),
    }


def abx_scores(
    utterances: list[tuple[np.ndarray, np.ndarray, str]], cfg: AbxConfig | None = None
) -> dict[str, Any]:
    """Within- and across-speaker ABX errors of the utterances' features and labels."""
    cfg = cfg or AbxConfig()
    items = make_items(utterances, cfg.max_frames)
    logging.info(
        f"ABX: {len(items.center)} triphone items ({items.too_long} longer than "
        f"{cfg.max_frames} frames left out), {len(set(items.speaker.tolist()))} speakers"
    )
    out: dict[str, Any] = {"config": asdict(cfg), "items": int(len(items.center))}
    out["items_too_long"] = items.too_long
    for mode, across in (("within", False), ("across", True)):
        out[mode] = abx_error(items, across, cfg)
        e = out[mode]["error"]
        logging.info(
            f"ABX {mode} speaker: "
            + (f"{100 * e:.2f} %" if e is not None else "no triplets")
            + f" over {out[mode]['triplets']} triplets"
        )
    return out


__all__ = ["PHONES", "AbxConfig", "abx_error", "abx_scores", "dtw_batch", "make_items"]
