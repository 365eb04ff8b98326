"""Forced alignment trained on the corpus itself, from transcripts only (stage 1 of
``egs/librispeech100`` with ``--align true``, or with ``--corpus-dir`` and no ``--labels-dir``).

Method (a flat-start hybrid aligner, no released labels and no downloaded weights):

1. Features: Kaldi-compatible MFCC (13 dims, 25 ms windows centred on the 10 ms frames of
   the labels; deltas and delta-deltas optional, ``deltas``), normalised per utterance (mean
   and variance; or per speaker). Each frame is classified from its own window only: a
   classifier trained on its own previous alignment that sees neighbouring frames can learn
   where that alignment put a boundary and keep it there (measured: wider windows align
   worse; see ``context`` and ``deltas``).
2. Pronunciations: :class:`cpc.audio.lexicon.Lexicon` (CMUdict, stress removed, 41 classes;
   out-of-vocabulary words become spoken noise, counted).
3. Each utterance is a left-to-right chain ``SIL? w1 SIL? w2 ... wn SIL?``: every phone of
   every word in order, each lasting at least ``min_frames`` frames, and an OPTIONAL silence
   before, between and after the words (the alignment decides where there is a pause), of
   at least ``sil_frames`` frames when it is taken.
4. Flat start: each utterance is cut into equal parts, one per phone, with silence at both
   ends. Then ``iterations`` times (and once more on the ``final_deltas`` features): train
   a frame classifier (an MLP on +-``context`` spliced frames) on the current labels (the
   Viterbi path; or, with ``targets="soft"``, the state occupancies of forward-backward:
   Baum-Welch instead of Viterbi training), and re-align every utterance by Viterbi through
   its chain with the classifier's scaled likelihoods (log posterior minus log prior).

Outputs (:func:`align_corpus`), in the CPC release format so stage 1 reads them unchanged::

    OUT_DIR/converted_aligned_phones.txt   "<utt-id> i1 i2 ..." one class id per 10 ms frame
    OUT_DIR/train_split.txt test_split.txt one utterance id per line
    OUT_DIR/phones.txt                     "<symbol> <id>", the 41 classes
    OUT_DIR/alignment_stats.json           per-phone frame counts and durations, OOV words,
                                           utterances that failed and why, per-iteration log
    OUT_DIR/alignment_quality.json         only with reference labels: frame agreement
                                           (overall and per phone), boundary errors

Failures are never silent: an empty transcript, or an utterance with fewer frames than its
phones need, is left out of the labels, logged (count and examples) and listed with its
reason in ``alignment_stats.json``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet, RecordingSet, SupervisionSet
from torch import nn
from tqdm import tqdm

from cpc.audio.constants import FRAME_SHIFT, PART, PHONE_TO_ID, PHONES, num_frames
from cpc.audio.lexicon import Lexicon
from cpc.audio.librispeech import MAX_EXAMPLES, DataPrepError, manifest_paths
from cpc.io import Pathlike, atomic_open, write_json_atomic

SIL_ID = PHONE_TO_ID["SIL"]
ALIGNMENT_FILE = "converted_aligned_phones.txt"
SPLIT_FILES = {"train": "train_split.txt", "test": "test_split.txt"}
STATS_FILE = "alignment_stats.json"
QUALITY_FILE = "alignment_quality.json"
VITERBI_BATCH = 32  # utterances aligned together
MFCC_DIMS = 13  # static MFCCs; the features are [static, deltas, delta-deltas][: order + 1]


@dataclass
class AlignConfig:
    """Aligner settings (all recorded in ``alignment_stats.json``)."""

    iterations: int = 12  # train + re-align rounds after the flat start
    epochs: int = 1  # classifier epochs per round (over all frames)
    min_steps: int = 300  # but at least this many batches per round (small corpora)
    context: int = 0  # spliced frames on each side of the classified frame (0: the frame
    # alone). On a 16-minute pilot corpus, 12 rounds, with delta-deltas (deltas=2):
    # context 0 83.3 %, 1 83.2 %, 2 82.6 %, 5 (8 rounds) 79.8 % frame agreement.
    hidden: int = 256  # MLP hidden units (two hidden layers)
    lr: float = 2e-3
    batch_frames: int = 1024
    min_frames: int = 3  # shortest duration of a phone (frames of 10 ms)
    deltas: int = 0  # MFCC delta order of the rounds' features: 0 (the 13 static MFCCs), 1
    # (+ deltas, 26 dims) or 2 (+ delta-deltas, 39). The classifier sees no frame but its
    # own: on the full default corpus 85.3 % (0), 84.9 % (1), 84.5 % (2) frame agreement.
    final_deltas: int | None = 2  # when set: after the rounds, one more round (train,
    # re-align) on the MFCCs with this delta order, which gives the labels: the richer
    # features help once, where they drift when used every round (full default corpus:
    # 85.34 % after the rounds, 85.55 % after the extra one; None: no extra round)
    cmvn: str = "utterance"  # feature mean/variance normalisation: "utterance" or "speaker"
    sil_states: int = 1  # sub-states of a pause (1: one silence class; at most ``states``)
    sil_frames: int = 1  # shortest pause between words (frames; states of the silence block)
    states: int = 3  # sub-phone states per phone (1: one class per phone; 3: begin/mid/end)
    prior_scale: float = 0.5  # log posterior - prior_scale * log prior
    targets: str = "hard"  # classifier targets: "hard" (the Viterbi path, Viterbi training)
    # or "soft" (state occupancies by forward-backward, Baum-Welch training)
    test_fraction: float = 0.2  # split when no split files are given: per speaker
    seed: int = 42

    def __post_init__(self) -> None:
        """Refuse settings no chain or classifier can use, before any work (the message
        names the setting as ``local/align.py`` spells it)."""
        bad = []
        if not 1 <= self.sil_states <= self.states:
            bad.append(
                f"--sil-states must be between 1 and --states ({self.states}), "
                f"not {self.sil_states}"
            )
        for name in ("iterations", "states", "min_frames", "sil_frames"):
            if getattr(self, name) < 1:
                bad.append(
                    f"--{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}"
                )
        if self.context < 0:
            bad.append(f"--context must be 0 or more, not {self.context}")
        if self.deltas not in (0, 1, 2):
            bad.append(f"--deltas must be 0, 1 or 2, not {self.deltas}")
        if self.final_deltas not in (None, 0, 1, 2):
            bad.append(f"--final-deltas must be 0, 1 or 2, not {self.final_deltas}")
        if self.targets not in ("hard", "soft"):
            bad.append(f"--targets must be 'hard' or 'soft', not {self.targets!r}")
        if self.cmvn not in ("utterance", "speaker"):
            bad.append(f"--cmvn must be 'utterance' or 'speaker', not {self.cmvn!r}")
        if bad:
            raise ValueError("; ".join(bad))


@dataclass
class Utterance:
    """One utterance to align: its id, speaker, features (T, D) and word pronunciations."""

    id: str
    speaker: str
    feats: np.ndarray
    words: list[list[int]]
    energy: np.ndarray | None = None  # per-frame log energy (MFCC c0), for the flat start


@dataclass
class Chain:
    """The left-to-right state chain of an utterance: ``phone[s]`` is the class of state
    ``s``; ``optional[s]`` marks the optional silences (Viterbi may skip them)."""

    phone: np.ndarray
    optional: np.ndarray

    @property
    def min_frames(self) -> int:
        """Frames needed at least: one per mandatory state."""
        return int((~self.optional).sum())


def build_chain(
    words: list[list[int]],
    min_frames: int = 1,
    states: int = 1,
    sil_frames: int = 1,
    sil_states: int = 1,
) -> Chain:
    """``SIL? w1 SIL? w2 ... SIL?`` with each phone repeated ``min_frames`` times (the
    repeats are mandatory states, so the phone lasts at least that long).

    With ``states`` > 1 each phone ``p`` is a left-to-right run of sub-phone classes
    ``p * states + k`` (k = 0 .. states-1, the phone's begin ... end), the ``min_frames``
    mandatory states shared among them as evenly as possible (at least one each); silence is
    one class, ``SIL_ID * states``. A class ``c`` is phone ``c // states``.

    Each optional silence is a block of ``sil_frames`` states (all of the silence class):
    a pause, when the path takes it, lasts at least ``sil_frames`` frames, as a silence HMM
    of that many states would (Kaldi's silence has 5); the path may skip the whole block.
    With ``sil_states`` > 1 (at most ``states``) the pause is itself a left-to-right run of
    sub-states ``SIL_ID * states + k`` (its onset ... its end), like a phone's."""
    if not 1 <= sil_states <= states:
        raise ValueError(f"sil_states must be between 1 and states ({states}), not {sil_states}")
    n_sil = max(1, sil_frames, sil_states)
    sil_reps = np.diff(np.linspace(0, n_sil, sil_states + 1).round().astype(int))
    sil = [SIL_ID * states + k for k, r in enumerate(sil_reps) for _ in range(int(r))]
    phone: list[int] = list(sil)
    optional: list[bool] = [True] * len(sil)
    n = max(min_frames, states)
    reps = np.diff(np.linspace(0, n, states + 1).round().astype(int))
    for w in words:
        for p in w:
            for k, r in enumerate(reps):
                phone += [p * states + k] * int(r)
            optional += [False] * n
        phone += sil
        optional += [True] * len(sil)
    return Chain(np.array(phone, dtype=np.int64), np.array(optional, dtype=bool))


def viterbi(scores: np.ndarray, chain: Chain) -> np.ndarray:
    """Best path through ``chain`` for frame scores ``scores`` (T, C) (log domain).

    The path starts in state 0 or, skipping the optional leading silence, in the first
    mandatory state; it ends in the last state or, skipping the trailing silence, in the
    last mandatory state; every step stays, moves one state on, or jumps over a whole block
    of optional states. Returns the class id per frame (T,). Raises ValueError when T is
    smaller than ``chain.min_frames``.
    """
    return viterbi_batch([scores], [chain])[0]


def _skip_sources(optional: np.ndarray) -> np.ndarray:
    """For each state, the state before the block of optional states just before it (the
    state a path skipping that block comes from), or -1 when no optional block precedes it
    (or the block is the leading one)."""
    src = np.full(len(optional), -1, dtype=np.int64)
    for s in range(1, len(optional)):
        if optional[s - 1] and not optional[s]:
            j = s - 1
            while j >= 0 and optional[j]:
                j -= 1
            src[s] = j
    return src


def _lengths(scores: list[np.ndarray], chains: list[Chain]) -> tuple[np.ndarray, np.ndarray]:
    """Frames and states of each utterance of a batch; ValueError for one with fewer frames
    than its chain's mandatory states."""
    for sc, ch in zip(scores, chains):
        if sc.shape[0] < ch.min_frames:
            raise ValueError(f"{sc.shape[0]} frames for a chain that needs {ch.min_frames}")
    return np.array([sc.shape[0] for sc in scores]), np.array([len(ch.phone) for ch in chains])


def viterbi_batch(scores: list[np.ndarray], chains: list[Chain]) -> list[np.ndarray]:
    """:func:`viterbi` of several utterances at once: one loop over the frames of the
    longest, each step vectorised over all utterances and states."""
    B = len(scores)
    T, S = _lengths(scores, chains)
    t_max, s_max = int(T.max()), int(S.max())
    neg = -np.inf
    emit = np.full((B, t_max, s_max), neg)
    skip_src = np.full((B, s_max), -1, dtype=np.int64)  # may enter s from skip_src (>= 0)
    first = np.zeros(B, dtype=np.int64)  # first mandatory state (after the leading block)
    for b, (sc, ch) in enumerate(zip(scores, chains)):
        emit[b, : T[b], : S[b]] = sc[:, ch.phone]
        skip_src[b, : S[b]] = _skip_sources(ch.optional)
        mandatory = np.flatnonzero(~ch.optional)
        first[b] = mandatory[0] if len(mandatory) else 0
    has_skip = skip_src >= 0
    skip_step = np.where(has_skip, np.arange(s_max)[None, :] - skip_src, 0)
    skip_idx = np.maximum(skip_src, 0)
    delta = np.full((B, s_max), neg)
    delta[:, 0] = emit[:, 0, 0]
    rows1 = np.arange(B)
    delta[rows1, first] = emit[rows1, 0, first]
    back = np.zeros((B, t_max, s_max), dtype=np.int16)  # states moved on: 0 stay, 1, or a skip
    final = np.where((T == 1)[:, None], delta, neg)
    pad1 = np.full((B, 1), neg)
    rows = np.arange(B)[:, None]
    cols = np.arange(s_max)[None, :]
    for t in range(1, t_max):
        prev1 = np.concatenate((pad1, delta[:, :-1]), axis=1)
        prevs = np.take_along_axis(delta, skip_idx, axis=1)
        prevs[~has_skip] = neg
        cand = np.stack([delta, prev1, prevs])
        arg = cand.argmax(0)
        back[:, t] = np.where(arg == 2, skip_step, arg)
        delta = cand[arg, rows, cols] + emit[:, t]
        done = T == t + 1
        if done.any():
            final[done] = delta[done]
    out = []
    for b, ch in enumerate(chains):
        mandatory = np.flatnonzero(~ch.optional)
        ends = [S[b] - 1] + ([int(mandatory[-1])] if len(mandatory) and ch.optional[-1] else [])
        s = max(ends, key=lambda e: final[b, e])
        if not np.isfinite(final[b, s]):
            raise ValueError(f"no path of {T[b]} frames through a chain of {S[b]} states")
        path = np.empty(T[b], dtype=np.int64)
        for t in range(T[b] - 1, -1, -1):
            path[t] = s
            s -= int(back[b, t, s])
        out.append(ch.phone[path])
    return out


def _skip_targets(optional: np.ndarray) -> np.ndarray:
    """For each state, the state a path jumping over the optional block right after it lands
    in, or -1 (the inverse of :func:`_skip_sources`)."""
    dst = np.full(len(optional), -1, dtype=np.int64)
    src = _skip_sources(optional)
    for s in np.flatnonzero(src >= 0):
        dst[src[s]] = s
    return dst


def forward_backward_batch(
    scores: list[np.ndarray], chains: list[Chain], num_classes: int
) -> list[np.ndarray]:
    """Per-frame class occupancies of each utterance: the posterior probability, over all
    paths through its chain (the topology of :func:`viterbi`) weighted by the frame scores,
    that frame ``t`` is in a state of class ``c``. Returns one (T, ``num_classes``) float32
    array per utterance, each row summing to 1. Raises ValueError as :func:`viterbi`."""
    B = len(scores)
    T, S = _lengths(scores, chains)
    t_max, s_max = int(T.max()), int(S.max())
    neg = float("-inf")
    emit = torch.full((B, t_max, s_max), neg)
    skip_src = np.full((B, s_max), -1, dtype=np.int64)
    skip_dst = np.full((B, s_max), -1, dtype=np.int64)
    start = torch.full((B, s_max), neg)
    end = torch.full((B, s_max), neg)
    for b, (sc, ch) in enumerate(zip(scores, chains)):
        emit[b, : T[b], : S[b]] = torch.from_numpy(np.ascontiguousarray(sc[:, ch.phone]))
        skip_src[b, : S[b]] = _skip_sources(ch.optional)
        skip_dst[b, : S[b]] = _skip_targets(ch.optional)
        mandatory = np.flatnonzero(~ch.optional)
        start[b, 0] = 0.0
        start[b, mandatory[0] if len(mandatory) else 0] = 0.0
        end[b, S[b] - 1] = 0.0
        if len(mandatory) and ch.optional[-1]:
            end[b, int(mandatory[-1])] = 0.0
    src_idx = torch.from_numpy(np.maximum(skip_src, 0))
    no_src = torch.from_numpy(skip_src < 0)
    dst_idx = torch.from_numpy(np.maximum(skip_dst, 0))
    no_dst = torch.from_numpy(skip_dst < 0)
    pad = torch.full((B, 1), neg)
    alpha = torch.empty((B, t_max, s_max))
    a = start + emit[:, 0]
    alpha[:, 0] = a
    for t in range(1, t_max):
        prev1 = torch.cat((pad, a[:, :-1]), dim=1)
        prevs = torch.gather(a, 1, src_idx).masked_fill(no_src, neg)
        a = torch.logsumexp(torch.stack((a, prev1, prevs)), 0) + emit[:, t]
        alpha[:, t] = a
    last = torch.from_numpy(T - 1)  # each utterance's last frame
    log_z = torch.logsumexp(alpha[torch.arange(B), last] + end, 1)  # (B,)
    if not torch.isfinite(log_z).all():
        bad = int(torch.nonzero(~torch.isfinite(log_z))[0])
        raise ValueError(f"no path of {T[bad]} frames through a chain of {S[bad]} states")
    gamma = alpha  # reused in place: alpha + beta - log Z
    beta = end.clone()
    for t in range(t_max - 1, -1, -1):
        if t < t_max - 1:
            nb = beta + emit[:, t + 1]
            next1 = torch.cat((nb[:, 1:], pad), dim=1)
            nexts = torch.gather(nb, 1, dst_idx).masked_fill(no_dst, neg)
            beta = torch.logsumexp(torch.stack((nb, next1, nexts)), 0)
            here = last == t  # an utterance that ends at t starts its backward pass here
            if here.any():
                beta[here] = end[here]
        gamma[:, t] += beta
    gamma -= log_z[:, None, None]
    out = []
    for b, ch in enumerate(chains):
        occ = gamma[b, : T[b], : S[b]].exp()
        post = torch.zeros((int(T[b]), num_classes)).index_add_(1, torch.from_numpy(ch.phone), occ)
        out.append((post / post.sum(1, keepdim=True)).numpy())
    return out


def pause_frames(energy: np.ndarray, min_pause: int = 10, floor: float = 0.3) -> np.ndarray:
    """Frames that are silent by energy: below ``q10 + floor * (q90 - q10)`` of the
    utterance's log energy, in runs of at least ``min_pause`` frames, or any run touching
    either end of the utterance. A boolean mask (T,)."""
    if len(energy) == 0:
        return np.zeros(0, dtype=bool)
    lo, hi = np.quantile(energy, [0.1, 0.9])
    quiet = energy < lo + floor * (hi - lo)
    mask = np.zeros(len(energy), dtype=bool)
    starts, lengths, values = runs(quiet.astype(np.int64))
    for a, n, v in zip(starts, lengths, values):
        if v and (n >= min_pause or a == 0 or a + n == len(energy)):
            mask[a : a + n] = True
    return mask


def flat_start(num_frames_: int, chain: Chain, pauses: np.ndarray | None = None) -> np.ndarray:
    """Initial labels (the chain's classes): the ``pauses`` frames (:func:`pause_frames`) are
    silence, and the other frames are shared equally, in order, among the mandatory states.
    Without ``pauses`` (or when too few frames are left for the phones), the phones and
    the two edge silences share all frames equally."""
    phones = chain.phone[~chain.optional]
    if pauses is not None and (~pauses).sum() >= len(phones) and len(phones):
        out = np.full(num_frames_, SIL_ID, dtype=np.int64)
        speech = np.flatnonzero(~pauses)
        edges = np.linspace(0, len(speech), len(phones) + 1).round().astype(int)
        out[speech] = np.repeat(phones, np.diff(edges))
        return out
    keep = ~chain.optional.copy()
    keep[0] = keep[-1] = True
    phones = chain.phone[keep]
    edges = np.linspace(0, num_frames_, len(phones) + 1).round().astype(int)
    return np.repeat(phones, np.diff(edges))


# --------------------------------------------------------------------------- classifier


class FrameClassifier(nn.Module):
    """MLP over ``2 * context + 1`` spliced frames -> 41 class logits."""

    def __init__(self, dim: int, context: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.context = context
        self.net = nn.Sequential(
            nn.Linear(dim * (2 * context + 1), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class _Frames:
    """All utterances' frames in one tensor, with spliced-context gathering that never
    crosses an utterance boundary (edge frames are repeated)."""

    def __init__(self, feats: list[np.ndarray], context: int) -> None:
        self.x = torch.from_numpy(np.concatenate(feats).astype(np.float32))
        lens = np.array([len(f) for f in feats])
        self.offsets = np.concatenate(([0], np.cumsum(lens)))
        self.lo = torch.from_numpy(np.repeat(self.offsets[:-1], lens))
        self.hi = torch.from_numpy(np.repeat(self.offsets[1:] - 1, lens))
        self.shift = torch.arange(-context, context + 1)

    def __len__(self) -> int:
        return self.x.shape[0]

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        j = idx[:, None] + self.shift[None, :]
        j = torch.maximum(torch.minimum(j, self.hi[idx, None]), self.lo[idx, None])
        return self.x[j]  # (B, 2c+1, D)


def _train_classifier(
    frames: _Frames, labels: np.ndarray, cfg: AlignConfig, gen: torch.Generator
) -> FrameClassifier:
    """An MLP trained on ``labels``: a class per frame (N,), or a distribution over the
    classes per frame (N, C) (soft targets)."""
    model = FrameClassifier(frames.x.shape[1], cfg.context, cfg.hidden, len(PHONES) * cfg.states)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    y = torch.from_numpy(labels)
    n = len(frames)
    per_epoch = math.ceil(n / cfg.batch_frames)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))
    steps = epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc="Training the frame classifier", unit=" batches") as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.batch_frames):
                idx = order[i : i + cfg.batch_frames]
                loss = nn.functional.cross_entropy(model(frames.gather(idx)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    model.eval()
    return model


@torch.no_grad()
def _log_posteriors(model: FrameClassifier, frames: _Frames, chunk: int = 32768) -> np.ndarray:
    out = [
        torch.log_softmax(model(frames.gather(torch.arange(i, min(i + chunk, len(frames))))), -1)
        for i in range(0, len(frames), chunk)
    ]
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- corpus


@dataclass
class AlignResult:
    """Per-frame labels of the aligned utterances, failures (id -> reason) and statistics."""

    labels: dict[str, np.ndarray]
    failed: dict[str, str]
    stats: dict[str, Any] = field(default_factory=dict)


def normalize(feats: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation."""
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-5)


def normalize_per_speaker(utts: list[Utterance], raw: list[np.ndarray]) -> None:
    """Mean and variance normalisation over all frames of each speaker (Kaldi's and the
    Montreal Forced Aligner's per-speaker CMVN): ``utts[i].feats`` becomes ``raw[i]``
    normalised with its speaker's statistics."""
    by_spk: dict[str, list[int]] = {}
    for i, u in enumerate(utts):
        by_spk.setdefault(u.speaker, []).append(i)
    for idx in by_spk.values():
        allf = np.concatenate([raw[i] for i in idx])
        mean, std = allf.mean(0), allf.std(0) + 1e-5
        for i in idx:
            utts[i].feats = (raw[i] - mean) / std


def prepare_utterances(
    cuts: CutSet, lexicon: Lexicon, cmvn: str = "utterance", deltas: int = 2
) -> tuple[list[Utterance], dict[str, str]]:
    """MFCC features and pronunciations of every cut; empty transcripts are failures.
    ``deltas``: the features' delta order, their columns [13 static MFCCs, 13 deltas, 13
    delta-deltas][: deltas + 1] (the aligner uses the first columns of each round's order);
    ``cmvn``: normalise them per ``utterance`` or per ``speaker``. ``Utterance.energy`` is
    the unnormalised c0, for the flat start's pauses."""
    if cmvn not in ("utterance", "speaker"):
        raise ValueError(f"cmvn must be 'utterance' or 'speaker', not {cmvn!r}")
    from cpc.audio.extractor import MfccDeltas, MfccDeltasConfig, load_waveform

    mfcc = MfccDeltas(MfccDeltasConfig(delta_order=deltas))
    utts: list[Utterance] = []
    raw: list[np.ndarray] = []
    failed: dict[str, str] = {}
    for cut in tqdm(cuts, desc="MFCC for alignment", unit=" utts"):
        sup = cut.supervisions[0] if cut.supervisions else None
        text = (sup.text or "") if sup is not None else ""
        words = lexicon.transcript(text)
        if not words:
            failed[cut.id] = "empty transcript (no words to align)"
            continue
        n = num_frames(cut.duration, cut.sampling_rate)
        feats = mfcc.extract(load_waveform(cut, n), cut.sampling_rate)
        utts.append(Utterance(cut.id, str(sup.speaker), normalize(feats), words, feats[:, 0]))
        if cmvn == "speaker":
            raw.append(feats)
    if cmvn == "speaker":
        normalize_per_speaker(utts, raw)
    return utts, failed


def _mfcc_frames(utts: list[Utterance], deltas: int, context: int) -> _Frames:
    """The first ``13 * (deltas + 1)`` feature columns of every utterance (the features are
    laid out as [13 static MFCCs, their deltas, their delta-deltas]); ValueError when the
    utterances have fewer columns (computed with a lower delta order)."""
    dims = MFCC_DIMS * (deltas + 1)
    have = min(u.feats.shape[1] for u in utts)
    if have < dims:
        raise ValueError(
            f"delta order {deltas} needs {dims} feature columns, the utterances have {have}: "
            f"compute them with prepare_utterances(..., deltas={deltas}) or more"
        )
    return _Frames([u.feats[:, :dims] for u in utts], context)


def align_utterances(
    utts: list[Utterance], cfg: AlignConfig, reference: dict[str, np.ndarray] | None = None
) -> AlignResult:
    """Train the aligner on ``utts`` and align them (see the module docstring). The
    utterances' features are MFCCs laid out as :func:`prepare_utterances` writes them, with
    at least the columns of ``cfg.deltas`` and ``cfg.final_deltas``. With
    ``reference`` labels, each round also logs its frame agreement with them (they are never
    used for training)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    failed: dict[str, str] = {}
    chains: dict[str, Chain] = {}
    kept: list[Utterance] = []
    for u in utts:
        chain = build_chain(u.words, cfg.min_frames, cfg.states, cfg.sil_frames, cfg.sil_states)
        if len(u.feats) < chain.min_frames:
            n_ph = sum(len(w) for w in u.words)
            failed[u.id] = (
                f"too short for its transcript: {len(u.feats)} frames "
                f"({len(u.feats) * FRAME_SHIFT:.2f} s) for {n_ph} phones of at least "
                f"{cfg.min_frames} frames each"
            )
            continue
        chains[u.id] = chain
        kept.append(u)
    if not kept:
        raise DataPrepError(
            "no utterance can be aligned (every transcript is empty or too long for its "
            "audio); check the corpus's .trans.txt files"
        )
    frames = _mfcc_frames(kept, cfg.deltas, cfg.context)
    final = None if cfg.final_deltas is None else _mfcc_frames(kept, cfg.final_deltas, cfg.context)
    rounds = cfg.iterations + (final is not None)
    S = cfg.states
    current = [  # classes of the chains' states (phone * S + sub-phone state)
        flat_start(len(u.feats), chains[u.id], None if u.energy is None else pause_frames(u.energy))
        for u in kept
    ]
    ids = [u.id for u in kept]
    if reference is not None:
        agree = _frame_agreement(dict(zip(ids, (c // S for c in current))), reference)
        logging.info(f"flat start: frame agreement with the reference {agree:.1%}")
    history = []
    num_classes = len(PHONES) * S
    soft: np.ndarray | None = None  # (N, C) occupancies with targets="soft", after round 1
    for it in range(rounds):
        t0 = time.time()
        if it == cfg.iterations:  # the extra round: the final features, one re-alignment
            frames = final
        y = np.concatenate(current)
        model = _train_classifier(frames, y if soft is None else soft, cfg, gen)
        if soft is None:
            counts = np.bincount(y, minlength=num_classes).astype(np.float64) + 1.0
        else:
            counts = soft.sum(0, dtype=np.float64) + 1.0
        log_prior = np.log(counts / counts.sum())
        post = _log_posteriors(model, frames)
        frame_acc = float((post.argmax(1) == y).mean())
        scores = post - cfg.prior_scale * log_prior[None, :]
        new: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(kept)
        order = sorted(range(len(kept)), key=lambda i: len(kept[i].feats))
        batches = [order[k : k + VITERBI_BATCH] for k in range(0, len(order), VITERBI_BATCH)]
        for idx in tqdm(batches, desc=f"Viterbi alignment {it + 1}", unit=" batches"):
            sc = [scores[frames.offsets[i] : frames.offsets[i + 1]] for i in idx]
            for i, lab in zip(idx, viterbi_batch(sc, [chains[kept[i].id] for i in idx])):
                new[i] = lab
        if cfg.targets == "soft" and it + 1 < rounds:
            soft = np.empty((len(frames), num_classes), dtype=np.float32)
            for idx in tqdm(batches, desc=f"Forward-backward {it + 1}", unit=" batches"):
                sc = [scores[frames.offsets[i] : frames.offsets[i + 1]] for i in idx]
                occ = forward_backward_batch(sc, [chains[kept[i].id] for i in idx], num_classes)
                for i, o in zip(idx, occ):
                    soft[frames.offsets[i] : frames.offsets[i + 1]] = o
        changed = float(np.mean(np.concatenate(new) != y))
        current = new  # sub-phone classes (phones when S is 1)
        history.append(
            {
                "iteration": it + 1,
                "classifier_frame_accuracy": round(frame_acc, 4),
                "frames_relabelled": round(changed, 4),
                "seconds": round(time.time() - t0, 1),
            }
        )
        if reference is not None:
            agree = _frame_agreement(dict(zip(ids, (c // S for c in current))), reference)
            history[-1]["frame_agreement_with_reference"] = agree
            logging.info(f"round {it + 1}: frame agreement with the reference {agree:.2%}")
        logging.info(
            f"alignment round {it + 1}/{rounds}: classifier agrees with the current "
            f"labels on {frame_acc:.1%} of frames; re-alignment changed {changed:.1%}"
        )
    labels = {u.id: lab // S for u, lab in zip(kept, current)}
    return AlignResult(labels, failed, {"iterations": history})


def load_corpus_cuts(manifest_dir: Pathlike, part: str = PART) -> CutSet:
    """The stage-0 manifests as cuts (cut id = recording id = utterance id)."""
    rec_path, sup_path = manifest_paths(manifest_dir, part)
    for p in (rec_path, sup_path):
        if not p.is_file():
            raise DataPrepError(f"{p} not found: run stage 0 first")
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_file(rec_path),
        supervisions=SupervisionSet.from_file(sup_path),
    )
    return CutSet.from_cuts(c.with_id(c.recording_id) for c in cuts).sort_by_recording_id()


def make_split(speakers: dict[str, str], test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Per speaker, a seeded ``test_fraction`` of its utterances (at least one when it has
    two or more) for test, the rest for train: every speaker is in both splits."""
    by_spk: dict[str, list[str]] = {}
    for utt, spk in sorted(speakers.items()):
        by_spk.setdefault(spk, []).append(utt)
    rng = np.random.default_rng(seed)
    train: list[str] = []
    test: list[str] = []
    for spk in sorted(by_spk):
        ids = by_spk[spk]
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = max(1, round(test_fraction * len(ids))) if len(ids) >= 2 else 0
        test += order[:n_test]
        train += order[n_test:]
    return {"train": sorted(train), "test": sorted(test)}


def phone_durations(labels: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per phone: number of segments and their mean / median duration in ms."""
    durs: dict[int, list[int]] = {}
    for lab in labels.values():
        starts, lengths, values = runs(lab)
        for v, n in zip(values, lengths):
            durs.setdefault(int(v), []).append(int(n))
    ms = FRAME_SHIFT * 1000
    return {
        PHONES[p]: {
            "segments": len(d),
            "mean_ms": round(float(np.mean(d)) * ms, 1),
            "median_ms": round(float(np.median(d)) * ms, 1),
        }
        for p, d in sorted(durs.items())
    }


def runs(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of a label sequence: (starts, lengths, values)."""
    if len(lab) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [len(lab)])))
    return starts, lengths, lab[starts]


def _frame_agreement(hyp: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    same = total = 0
    for utt in set(hyp) & set(ref):
        n = min(len(hyp[utt]), len(ref[utt]))
        same += int((hyp[utt][:n] == ref[utt][:n]).sum())
        total += n
    return round(same / max(total, 1), 4)


def alignment_quality(hyp: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, Any]:
    """Agreement of ``hyp`` with reference labels ``ref`` on the utterances both hold.

    - frame agreement: the share of frames with the same class, overall and per reference
      phone (the share of that phone's frames that ``hyp`` gives the same class);
    - boundary error: the two segment sequences (runs of one class) are matched by edit
      distance (kaldialign); for each matched segment pair of the same class, the distance
      between their start times in ms. Median, mean and the share within 20 ms.
    Frame counts that differ are compared over the shorter length.
    """
    import kaldialign

    common = sorted(set(hyp) & set(ref))
    same = np.zeros(len(PHONES), dtype=np.int64)
    total = np.zeros(len(PHONES), dtype=np.int64)
    errors: list[int] = []
    for utt in common:
        n = min(len(hyp[utt]), len(ref[utt]))
        h, r = hyp[utt][:n], ref[utt][:n]
        total += np.bincount(r, minlength=len(PHONES))
        same += np.bincount(r[h == r], minlength=len(PHONES))
        hs, _, hv = runs(h)
        rs, _, rv = runs(r)
        pairs = kaldialign.align(rv.tolist(), hv.tolist(), -1)
        i = j = 0
        for a, b in pairs:
            if a != -1 and b != -1:
                if a == b and i > 0:  # the start of the first segment is not a boundary
                    errors.append(abs(int(rs[i]) - int(hs[j])))
            if a != -1:
                i += 1
            if b != -1:
                j += 1
    ms = FRAME_SHIFT * 1000
    err = np.array(errors, dtype=np.float64) * ms
    per_phone = {
        PHONES[p]: {"frames": int(total[p]), "agreement": round(float(same[p] / total[p]), 4)}
        for p in range(len(PHONES))
        if total[p]
    }
    return {
        "utterances": len(common),
        "frames": int(total.sum()),
        "frame_agreement": round(float(same.sum() / max(total.sum(), 1)), 4),
        "per_phone": per_phone,
        "boundaries": len(errors),
        "boundary_error_median_ms": float(np.median(err)) if len(err) else None,
        "boundary_error_mean_ms": round(float(err.mean()), 2) if len(err) else None,
        "boundaries_within_20ms": round(float((err <= 20).mean()), 4) if len(err) else None,
    }


def pronunciation_mismatch(
    words: dict[str, list[list[int]]], ref: dict[str, np.ndarray]
) -> dict[str, Any]:
    """How far the lexicon's phone sequences are from the reference's before any timing: the
    phone error rate (kaldialign) of each utterance's pronunciations (``words``, silence
    never in them) against its reference labels' runs with silence removed. Frames of
    mismatched phones cannot agree however good the timing, so this bounds the agreement."""
    import kaldialign

    counts = {"ins": 0, "del": 0, "sub": 0}
    n = 0
    for utt in sorted(set(words) & set(ref)):
        _, _, values = runs(ref[utt])
        r = [int(v) for v in values if v != SIL_ID]
        h = [p for w in words[utt] for p in w]
        e = kaldialign.edit_distance(r, h)
        for k in counts:
            counts[k] += int(e[k])
        n += len(r)
    errors = sum(counts.values())
    return {"per": round(errors / max(n, 1), 4), "ref_phones": n, **counts}


def _report_failures(failed: dict[str, str], lexicon: Lexicon) -> None:
    if lexicon.oov:
        n = sum(lexicon.oov.values())
        logging.warning(
            f"{len(lexicon.oov)} words ({n} tokens) are not in CMUdict and were aligned as "
            f"spoken noise (SPN), e.g. {', '.join(w for w, _ in lexicon.oov.most_common(10))}"
        )
    if failed:
        reasons = Counter(r.split(":")[0] for r in failed.values())
        examples = "; ".join(f"{u}: {r}" for u, r in list(failed.items())[:MAX_EXAMPLES])
        logging.warning(
            f"{len(failed)} utterances could not be aligned and are left out of the labels "
            f"({dict(reasons)}), e.g. {examples}. Fix their .trans.txt lines (listed in "
            f"{STATS_FILE}) to include them"
        )


def align_corpus(
    manifest_dir: Pathlike,
    out_dir: Pathlike,
    cfg: AlignConfig | None = None,
    split_dir: Pathlike | None = None,
    reference_dir: Pathlike | None = None,
    part: str = PART,
) -> AlignResult:
    """Align the stage-0 corpus of ``manifest_dir`` and write ``out_dir`` (module docstring).

    ``split_dir``: a directory with train_split.txt / test_split.txt to reuse (e.g. the CPC
    release's); without it a seeded per-speaker split is made. ``reference_dir``: labels in
    the CPC release format to measure the alignment against (``alignment_quality.json``).
    """
    from cpc.audio.labels import read_alignments, read_split, write_phones

    cfg = cfg or AlignConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cuts = load_corpus_cuts(manifest_dir, part)
    hours = sum(c.duration for c in cuts) / 3600
    lexicon = Lexicon()
    utts, failed = prepare_utterances(
        cuts,
        lexicon,
        cfg.cmvn,
        max(cfg.deltas, -1 if cfg.final_deltas is None else cfg.final_deltas),
    )
    ref = None
    if reference_dir is not None:
        ref, _ = read_alignments(Path(reference_dir) / ALIGNMENT_FILE, len(PHONES))
    result = align_utterances(utts, cfg, ref)
    result.failed = {**failed, **result.failed}
    _report_failures(result.failed, lexicon)

    speakers = {u.id: u.speaker for u in utts if u.id in result.labels}
    if split_dir is not None:
        splits = {
            s: [u for u in read_split(Path(split_dir) / name) if u in result.labels]
            for s, name in SPLIT_FILES.items()
        }
    else:
        splits = make_split(speakers, cfg.test_fraction, cfg.seed)

    with atomic_open(out_dir / ALIGNMENT_FILE, "w", encoding="utf-8") as f:
        for utt in sorted(result.labels):
            f.write(utt + " " + " ".join(map(str, result.labels[utt].tolist())) + "\n")
    for s, name in SPLIT_FILES.items():
        with atomic_open(out_dir / name, "w", encoding="utf-8") as f:
            f.write("".join(u + "\n" for u in splits[s]))
    write_phones(out_dir / "phones.txt", PHONES)

    seconds = time.time() - t0
    result.stats.update(
        {
            "config": asdict(cfg),
            "audio_hours": round(hours, 4),
            "utterances": len(cuts),
            "aligned": len(result.labels),
            "failed": result.failed,
            "failed_count": len(result.failed),
            "oov_words": dict(lexicon.oov.most_common()),
            "oov_tokens": sum(lexicon.oov.values()),
            "words_spelt_from_parts": dict(lexicon.split.most_common()),
            "phone_durations": phone_durations(result.labels),
            "splits": {s: len(v) for s, v in splits.items()},
            "seconds": round(seconds, 1),
            "seconds_per_audio_hour": round(seconds / max(hours, 1e-9), 1),
        }
    )
    write_json_atomic(out_dir / STATS_FILE, result.stats)
    logging.info(
        f"aligned {len(result.labels)} of {len(cuts)} utterances ({hours:.2f} h) in "
        f"{seconds:.0f} s; {sum(lexicon.oov.values())} OOV tokens; {len(result.failed)} failed"
    )
    if ref is not None:
        quality = alignment_quality(result.labels, ref)
        quality["pronunciation_mismatch"] = pronunciation_mismatch(
            {u.id: u.words for u in utts if u.id in result.labels}, ref
        )
        quality["reference"] = str(reference_dir)
        write_json_atomic(out_dir / QUALITY_FILE, quality)
        result.stats["quality"] = quality
        logging.info(
            f"alignment vs {reference_dir}: frame agreement {quality['frame_agreement']:.1%} "
            f"over {quality['frames']} frames, boundary error median "
            f"{quality['boundary_error_median_ms']} ms "
            f"({quality['boundaries_within_20ms']:.1%} within 20 ms); the lexicon's phone "
            f"sequences differ from the reference's by "
            f"{quality['pronunciation_mismatch']['per']:.1%} PER"
        )
    return result
