"""Downstream ASR on stage-3 feature dumps (stage 6 of ``egs/librispeech100``): a small CTC
phone recogniser trained the way an icefall recipe consumes fbank dumps.

Data: a dump directory (``data/<feat>/``, ``--manifest-dir`` in icefall's terms) read with
lhotse: ``DynamicBucketingSampler`` -> ``K2SpeechRecognitionDataset(input_strategy=
PrecomputedFeatures())`` (no k2 needed for it). Targets are the phone sequence of each cut's
frame labels (``phone_labels`` from stage 1: runs collapsed, silence removed), so a
recogniser is trained and scored on whichever labels stage 1 produced (the corpus's, the CPC
release's or the forced aligner's).

Model: per-feature standardisation (train-set mean and variance), a linear layer, a
``layers``-layer bidirectional LSTM and a linear output over the 41 classes, where class 0
(SIL) is the CTC blank (silence never appears in the targets). Trained with CTC and Adam for
``epochs`` epochs; every feature set gets the same settings and budget.

Decoding: greedy (best class per frame, repeats merged, blanks removed) and CTC prefix beam
search (``beam`` prefixes; per frame the ``beam`` best classes above ``prune`` log
probability).
Phone error rate (PER) = edit distance (kaldialign) / reference phones, over the test split.

Word-level decoding (a lexicon-constrained decoder) would need k2 or a WFST decoder: no k2
wheel exists for the torch this project uses, so only phone-level decoding is done; k2 is
never imported.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from torch import nn
from tqdm import tqdm

from cpc.audio.constants import LABEL_FIELD, PHONE_TO_ID, PHONES, PREFIX
from cpc.features import FeatureDumpError, load_dump, require_info
from cpc.io import Pathlike

BLANK = PHONE_TO_ID["SIL"]


class AsrError(ValueError):
    """Bad input to the downstream recogniser; the message names the file and the fix."""


@dataclass
class AsrConfig:
    hidden: int = 128
    layers: int = 2
    subsample: int = 2  # frames stacked into one LSTM step (2: 20 ms steps)
    epochs: int = 3
    min_steps: int = 500  # at least this many updates (more epochs on a small share)
    lr: float = 2e-3
    max_duration: float = 20.0  # seconds of audio per batch
    beam: int = 8
    prune: float = -8.0  # beam search skips classes below this log probability
    words: bool = True  # also decode words (lexicon prefix tree + word bigram) and score WER
    lm_weight: float = 1.0  # word decoding: weight of the bigram log probability
    word_bonus: float = 0.0  # word decoding: log-score added per word
    seed: int = 42


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x`` (B, T, D) within its length; padding stays at the end
    (applying it twice gives ``x`` back)."""
    t = torch.arange(x.shape[1])[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx[..., None].expand_as(x))


class PhoneRecognizer(nn.Module):
    """Standardise -> stack ``subsample`` frames -> linear -> BiLSTM -> linear over the 41
    classes (blank = SIL = 0).

    The BiLSTM is run layer by layer as two unidirectional LSTMs, the backward one on each
    sequence reversed within its length: exact for padded batches (padding never enters a
    valid step) and much faster on CPUs than packed sequences."""

    def __init__(
        self, dim: int, hidden: int, layers: int, subsample: int = 1, num_classes: int = len(PHONES)
    ):
        super().__init__()
        self.dim = dim
        self.subsample = subsample
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.proj = nn.Linear(dim * subsample, hidden)
        self.fwd = nn.ModuleList(
            nn.LSTM(hidden if i == 0 else 2 * hidden, hidden, batch_first=True)
            for i in range(layers)
        )
        self.bwd = nn.ModuleList(
            nn.LSTM(hidden if i == 0 else 2 * hidden, hidden, batch_first=True)
            for i in range(layers)
        )
        self.out = nn.Linear(2 * hidden, num_classes)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output steps for ``lengths`` input frames."""
        return (lengths + self.subsample - 1) // self.subsample

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Log probabilities (B, T', C) of padded features (B, T, D), T' = ceil(T / s);
        the valid steps of item i are ``output_lengths(lengths)[i]``."""
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        x = (x - self.mean) / self.std * valid[..., None]  # padding is 0 after standardising
        s = self.subsample
        pad = (-x.shape[1]) % s
        if pad:
            x = nn.functional.pad(x, (0, 0, 0, pad))
        x = x.reshape(x.shape[0], x.shape[1] // s, s * x.shape[2])
        lengths = self.output_lengths(lengths).cpu()
        h = self.proj(x)
        for f, b in zip(self.fwd, self.bwd):
            hf, _ = f(h)
            hb, _ = b(reverse_padded(h, lengths))
            h = torch.cat([hf, reverse_padded(hb, lengths)], dim=-1)
        return self.out(h).log_softmax(-1)


def phone_sequence(labels: np.ndarray) -> list[int]:
    """The phone sequence of frame labels: runs merged, silence (the blank) removed."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return []
    keep = np.concatenate(([True], labels[1:] != labels[:-1]))
    return [int(p) for p in labels[keep] if p != BLANK]


def ctc_min_steps(targets: list[int]) -> int:
    """The fewest CTC output steps that can emit ``targets``: one per label, plus a blank
    between each pair of equal neighbours."""
    return len(targets) + sum(a == b for a, b in zip(targets[:-1], targets[1:]))


def greedy_decode(logp: torch.Tensor) -> list[int]:
    """Best class per frame, repeats merged, blanks removed. ``logp`` (T, C)."""
    return phone_sequence(logp.argmax(-1).numpy())


def beam_decode(logp: torch.Tensor, beam: int = 8, prune: float = -8.0) -> list[int]:
    """CTC prefix beam search over ``logp`` (T, C) (log probabilities, blank = 0); per frame
    only the ``beam`` best classes above ``prune`` extend the prefixes."""
    lp = logp.double().numpy()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}  # (blank, non)
    for t in range(lp.shape[0]):
        row = lp[t]
        top = np.argpartition(-row, beam - 1)[:beam] if beam < len(row) else np.arange(len(row))
        cands = top[row[top] > prune]  # at most ``beam`` classes per frame
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (pb, pnb) in beams.items():
            total = np.logaddexp(pb, pnb)
            for c in cands:
                p = row[c]
                if c == BLANK:
                    e = nxt[prefix]
                    e[0] = np.logaddexp(e[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                new = prefix + (int(c),)
                e = nxt[new]
                if c == last:  # a repeat needs a blank in between to extend the prefix
                    e[1] = np.logaddexp(e[1], pb + p)
                    same = nxt[prefix]
                    same[1] = np.logaddexp(same[1], pnb + p)
                else:
                    e[1] = np.logaddexp(e[1], total + p)
        ranked = sorted(nxt.items(), key=lambda kv: -np.logaddexp(*kv[1]))[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    best = max(beams.items(), key=lambda kv: np.logaddexp(*kv[1]))[0]
    return list(best)


# --------------------------------------------------------------------------- words


class WordBigram:
    """A word bigram language model with interpolated absolute discounting (discount
    ``discount``; unigrams add-one smoothed over the vocabulary), trained on transcripts.
    ``logp(prev, word)`` is the natural-log probability; ``prev`` None is the sentence start,
    ``word`` None the sentence end."""

    def __init__(self, sentences: list[list[str]], discount: float = 0.7) -> None:
        self.discount = discount
        self.unigram: Counter[str | None] = Counter()
        self.bigram: dict[str | None, Counter[str | None]] = defaultdict(Counter)
        for words in sentences:
            seq: list[str | None] = [None, *words, None]
            for a, b in zip(seq[:-1], seq[1:]):
                self.bigram[a][b] += 1
                self.unigram[b] += 1
        self.vocab_size = len(self.unigram) + 1  # + an unseen word
        self.total = sum(self.unigram.values())
        self._cache: dict[tuple[str | None, str | None], float] = {}

    def _uni(self, word: str | None) -> float:
        return (self.unigram.get(word, 0) + 1) / (self.total + self.vocab_size)

    def logp(self, prev: str | None, word: str | None) -> float:
        key = (prev, word)
        if key not in self._cache:
            follow = self.bigram.get(prev)
            if not follow:
                p = self._uni(word)
            else:
                n = sum(follow.values())
                p = max(follow.get(word, 0) - self.discount, 0) / n
                p += self.discount * len(follow) / n * self._uni(word)
            self._cache[key] = math.log(p)
        return self._cache[key]


class PronunciationTree:
    """A prefix tree (trie) of the pronunciations of a vocabulary: node 0 is the root;
    ``child[n][phone]`` is the next node; ``words[n]`` the words whose pronunciation ends at
    ``n`` (homophones share a node); ``phone[n]`` the phone that leads into ``n``."""

    def __init__(self, pronunciations: dict[str, list[int]]) -> None:
        self.child: list[dict[int, int]] = [{}]
        self.words: list[list[str]] = [[]]
        self.phone: list[int] = [-1]
        for word in sorted(pronunciations):
            node = 0
            for p in pronunciations[word]:
                nxt = self.child[node].get(p)
                if nxt is None:
                    nxt = len(self.child)
                    self.child[node][p] = nxt
                    self.child.append({})
                    self.words.append([])
                    self.phone.append(p)
                node = nxt
            if node:
                self.words[node].append(word)


@dataclass
class _Hyp:
    pb: float  # log probability of the paths ending in blank
    pnb: float  # ... ending in the hypothesis's last phone
    lm: float  # weighted LM log probability + word insertion bonuses of the committed words


def _merge(
    hyps: dict[Any, _Hyp], key: Any, lm: float, pb: float = -math.inf, pnb: float = -math.inf
) -> None:
    """Add path probability to hypothesis ``key`` of ``hyps`` (created when new)."""
    h = hyps.get(key)
    if h is None:
        hyps[key] = _Hyp(pb, pnb, lm)
    else:
        h.pb = float(np.logaddexp(h.pb, pb))
        h.pnb = float(np.logaddexp(h.pnb, pnb))
        h.lm = max(h.lm, lm)


def word_beam_decode(
    logp: torch.Tensor,
    tree: PronunciationTree,
    lm: WordBigram | None = None,
    lm_weight: float = 1.0,
    word_bonus: float = 0.0,
    beam: int = 8,
    prune: float = -8.0,
) -> list[str]:
    """Lexicon-constrained CTC prefix beam search: the phone sequence must spell words of
    ``tree`` one after another. A hypothesis is (committed words, node of the word being
    spelt); extending it with a phone either goes down the tree, or, when the current node
    ends a word, commits that word (each homophone is its own hypothesis; with ``lm`` the
    word gets ``lm_weight * log P(word | previous word)`` + ``word_bonus``) and starts the
    next word from the root. At the end, the word being spelt must be complete (and the
    sentence end is scored by ``lm``); when no hypothesis ends on a complete word, the best
    one's committed words are returned. Blank is always a candidate, so hypotheses survive
    frames of a word the vocabulary lacks. ``logp`` (T, C): CTC log probabilities, blank = 0.
    Returns the best word sequence."""
    lp = logp.double().numpy()
    neg = -math.inf
    Key = tuple[tuple[str, ...], int]
    hyps: dict[Key, _Hyp] = {((), 0): _Hyp(0.0, neg, 0.0)}

    def commit(words: tuple[str, ...], node: int, lm_score: float) -> list[tuple[tuple, float]]:
        out = []
        for w in tree.words[node]:
            add = word_bonus
            if lm is not None:
                add += lm_weight * lm.logp(words[-1] if words else None, w)
            out.append(((*words, w), lm_score + add))
        return out

    def score(h: _Hyp) -> float:
        return float(np.logaddexp(h.pb, h.pnb)) + h.lm

    for t in range(lp.shape[0]):
        row = lp[t]
        top = np.argpartition(-row, beam - 1)[:beam] if beam < len(row) else np.arange(len(row))
        # blank always: a hypothesis the frame's phones cannot extend (a word outside the
        # vocabulary) waits in blank instead of dying
        cands = sorted({BLANK, *(int(c) for c in top[row[top] > prune])})
        nxt: dict[Key, _Hyp] = {}
        add = functools.partial(_merge, nxt)

        for (words, node), h in hyps.items():
            total = float(np.logaddexp(h.pb, h.pnb))
            last = tree.phone[node]
            for c in cands:
                p = float(row[c])
                if c == BLANK:
                    add((words, node), h.lm, pb=total + p)
                    continue
                if c == last:  # the same phone again: stays, unless a blank came between
                    add((words, node), h.lm, pnb=h.pnb + p)
                    src = h.pb + p
                else:
                    src = total + p
                if src == neg:
                    continue
                child = tree.child[node].get(c)
                if child is not None:
                    add((words, child), h.lm, pnb=src)
                if tree.words[node]:
                    start = tree.child[0].get(c)
                    if start is not None:
                        for new_words, new_lm in commit(words, node, h.lm):
                            add((new_words, start), new_lm, pnb=src)
        hyps = dict(sorted(nxt.items(), key=lambda kv: -score(kv[1]))[:beam])
    finals: list[tuple[float, tuple[str, ...]]] = []
    for (words, node), h in hyps.items():
        for done, lm_score in commit(words, node, h.lm) if node else [(words, h.lm)]:
            end = lm_weight * lm.logp(done[-1] if done else None, None) if lm else 0.0
            finals.append((float(np.logaddexp(h.pb, h.pnb)) + lm_score + end, done))
    if not finals:  # no hypothesis ends a word: the best one's complete words
        (words, _), _ = max(hyps.items(), key=lambda kv: score(kv[1]))
        return list(words)
    return list(max(finals)[1])


@dataclass
class WordModel:
    """What word decoding needs: the pronunciation tree of the vocabulary, the bigram, and
    the vocabulary's words left out for having no pronunciation (counted)."""

    tree: PronunciationTree
    lm: WordBigram
    vocabulary: int
    no_pronunciation: dict[str, int]


def transcript_words(cut: Any) -> list[str]:
    """The words of a cut's supervision text (upper case, split at white space)."""
    return [w for s in cut.supervisions for w in (s.text or "").upper().split()]


def build_word_model(cuts: CutSet) -> WordModel:
    """Vocabulary and word bigram from the transcripts of ``cuts`` (the train split), with
    CMUdict pronunciations (:class:`cpc.audio.lexicon.Lexicon`); words it cannot pronounce
    are left out of the vocabulary and counted."""
    from cpc.audio.lexicon import Lexicon

    lexicon = Lexicon()
    sentences = [transcript_words(c) for c in cuts]
    pron: dict[str, list[int]] = {}
    missing: Counter[str] = Counter()
    for words in sentences:
        for w in words:
            if w in pron or w in missing:
                missing[w] += w in missing
                continue
            phones = lexicon.lookup(w)
            if phones is None:
                missing[w] += 1
            else:
                pron[w] = [PHONE_TO_ID[p] for p in phones]
    return WordModel(PronunciationTree(pron), WordBigram(sentences), len(pron), dict(missing))


def word_error_rate(refs: list[list[str]], hyps: list[list[str]]) -> dict[str, Any]:
    """Word error rate with its parts (kaldialign edit distance)."""
    out = error_rate(refs, hyps)
    out["wer"] = out.pop("per")
    out["ref_words"] = out.pop("ref_phones")
    return out


def error_rate(refs: list[list[Any]], hyps: list[list[Any]]) -> dict[str, Any]:
    """Phone error rate with its parts (kaldialign edit distance)."""
    import kaldialign

    counts = {"ins": 0, "del": 0, "sub": 0, "total": 0}
    n = 0
    for r, h in zip(refs, hyps):
        e = kaldialign.edit_distance(r, h)
        for k in counts:
            counts[k] += int(e[k])
        n += len(r)
    return {"per": counts["total"] / max(n, 1), "ref_phones": n, **counts}


# --------------------------------------------------------------------------- data


def load_asr_cuts(feature_dir: Pathlike, part: str) -> tuple[CutSet, int]:
    """The cuts of a dump's part and the feature dimension (from info.json), checked: every
    cut has phone labels, and the dump's features have the dimension info.json states."""
    try:
        info = require_info(feature_dir)
        cuts = load_dump(feature_dir, part, PREFIX).to_eager()
    except FileNotFoundError as e:
        raise AsrError(str(e)) from e
    dim = int(info["dim"])
    unlabelled = [c.id for c in cuts if not (c.custom and LABEL_FIELD in c.custom)]
    if unlabelled:
        raise AsrError(
            f"{feature_dir}: {len(unlabelled)} of {len(cuts)} {part} cuts have no "
            f"{LABEL_FIELD}, e.g. {', '.join(unlabelled[:5])}; dump features from the "
            "labelled stage-1 cuts (run stages 1 and 3)"
        )
    first = next(iter(cuts), None)
    if first is not None and first.num_features != dim:
        raise AsrError(
            f"{feature_dir}: cut {first.id} has {first.num_features}-dim features but "
            f"info.json says {dim}; re-run the feature dump"
        )
    return cuts, dim


class _LabelRoundingFilter(logging.Filter):
    """Drops lhotse's warning, repeated for every cut of every batch, that a cut's duration
    and its phone labels' (frames x shift) differ, when they differ by less than one frame:
    the labels have ``compute_num_frames(duration)`` frames by construction. A mismatch of a
    frame or more is still logged."""

    _message = re.compile(
        r"duration between cut \(([\d.]+)s\) and temporal array in custom field "
        r"'[^']*' \(num_frames=\d+ \* frame_shift=([\d.]+) == duration=([\d.]+)\)"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        m = self._message.search(record.getMessage())
        if m is None:
            return True
        cut, shift, labels = map(float, m.groups())
        return abs(cut - labels) >= shift


_LABEL_ROUNDING_FILTER = _LabelRoundingFilter()


def _loader(cuts: CutSet, cfg: AsrConfig, shuffle: bool, seed: int) -> Any:
    """icefall's pattern: training batches from a duration-bucketing sampler, decoding
    batches in manifest order."""
    logging.getLogger().addFilter(_LABEL_ROUNDING_FILTER)  # lhotse logs on the root logger
    from lhotse.dataset import (
        DynamicBucketingSampler,
        K2SpeechRecognitionDataset,
        SimpleCutSampler,
    )
    from lhotse.dataset.input_strategies import PrecomputedFeatures

    if shuffle and len(cuts) >= 2:
        with warnings.catch_warnings():  # the cuts are in memory on purpose (several epochs)
            warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
            sampler = DynamicBucketingSampler(
                cuts,
                max_duration=cfg.max_duration,
                shuffle=True,
                num_buckets=min(5, len(cuts)),  # lhotse needs 2 or more
                seed=seed,
            )
    else:  # decoding, or a single cut (too few to bucket)
        sampler = SimpleCutSampler(cuts, max_duration=cfg.max_duration, shuffle=False)
    dataset = K2SpeechRecognitionDataset(input_strategy=PrecomputedFeatures(), return_cuts=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def _batch(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    feats = batch["inputs"]
    sup = batch["supervisions"]
    cuts = sup["cut"]
    lengths = torch.tensor([c.num_frames for c in cuts], dtype=torch.long)
    return feats, lengths.clamp(max=feats.shape[1]), cuts


def _targets(cut: Any) -> list[int]:
    return phone_sequence(cut.load_custom(LABEL_FIELD))


def _stats(cuts: CutSet, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.zeros(dim, dtype=torch.float64)
    s2 = torch.zeros(dim, dtype=torch.float64)
    n = 0
    for c in cuts:
        x = torch.from_numpy(np.asarray(c.load_features(), dtype=np.float64))
        s += x.sum(0)
        s2 += (x * x).sum(0)
        n += x.shape[0]
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean * mean).clamp_min(1e-10).sqrt()
    return mean.float(), std.float()


def train_recognizer(train_cuts: CutSet, dim: int, cfg: AsrConfig) -> tuple[PhoneRecognizer, dict]:
    """Train a recogniser on ``train_cuts``; returns it and a training log."""
    torch.manual_seed(cfg.seed)
    model = PhoneRecognizer(dim, cfg.hidden, cfg.layers, cfg.subsample)
    model.mean, model.std = _stats(train_cuts, dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)
    losses: list[float] = []
    t0, c0 = time.time(), time.process_time()
    steps = epoch = 0
    skipped: dict[str, str] = {}  # cuts that cannot contribute to the CTC loss, and why
    while epoch < cfg.epochs or steps < cfg.min_steps:  # the same rule for every feature set
        model.train()
        total, batches = 0.0, 0
        for batch in tqdm(
            _loader(train_cuts, cfg, True, cfg.seed + epoch),
            desc=f"ASR epoch {epoch + 1}",
            unit=" batches",
        ):
            x, lengths, cuts = _batch(batch)
            targets = [_targets(c) for c in cuts]
            tl = torch.tensor([len(t) for t in targets])
            out_len = model.output_lengths(lengths)
            for c, t, n in zip(cuts, targets, out_len.tolist()):
                if not t:
                    skipped.setdefault(c.id, "no phone in its labels")
                elif ctc_min_steps(t) > n:
                    need = ctc_min_steps(t)
                    skipped.setdefault(
                        c.id, f"{len(t)} phones need {need} CTC steps but the audio gives {n}"
                    )
            if int(tl.sum()) == 0:
                continue
            logp = model(x, lengths)
            loss = ctc(logp.transpose(0, 1), torch.tensor(sum(targets, [])), out_len, tl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach())
            batches += 1
        if batches == 0:
            raise AsrError("no training cut has a phone in its labels; check the stage-1 labels")
        steps += batches
        epoch += 1
        if epoch == 1 and skipped:
            logging.warning(
                f"{len(skipped)} of {len(train_cuts)} training cuts add nothing to the CTC loss "
                "(their labels have no phone, or more phones than the recogniser has output "
                "steps): "
                + "; ".join(f"{u}: {r}" for u, r in list(skipped.items())[:5])
                + ". They are listed in results.json (skipped_train_cuts)"
            )
        losses.append(round(total / max(batches, 1), 4))
        logging.info(f"ASR epoch {epoch} ({steps} updates): CTC loss {losses[-1]}")
    return model, {
        "train_loss": losses,
        "epochs": epoch,
        "updates": steps,
        "train_seconds": round(time.time() - t0, 1),
        "train_cpu_seconds": round(time.process_time() - c0, 1),
        "skipped_train_cuts": skipped,
    }


@torch.no_grad()
def evaluate(
    model: PhoneRecognizer,
    cuts: CutSet,
    dim: int,
    cfg: AsrConfig,
    words: WordModel | None = None,
) -> dict[str, Any]:
    """PER of greedy and beam-search decoding on ``cuts`` and, with ``words``, WER of
    lexicon-constrained decoding (:func:`word_beam_decode`); refuses a dimension mismatch."""
    if dim != model.dim:
        raise AsrError(
            f"the dump has {dim}-dim features but the recogniser was trained on "
            f"{model.dim}-dim ones; evaluate it on a dump of the feature type it was trained on"
        )
    model.eval()
    refs, greedy, beam, word_refs, word_hyps = [], [], [], [], []
    for batch in tqdm(_loader(cuts, cfg, False, cfg.seed), desc="ASR decoding", unit=" batches"):
        x, lengths, bcuts = _batch(batch)
        logp = model(x, lengths)
        out_len = model.output_lengths(lengths)
        for i, c in enumerate(bcuts):
            lp = logp[i, : int(out_len[i])]
            refs.append(_targets(c))
            greedy.append(greedy_decode(lp))
            beam.append(beam_decode(lp, cfg.beam, cfg.prune))
            if words is not None:
                word_refs.append(transcript_words(c))
                word_hyps.append(
                    word_beam_decode(
                        lp, words.tree, words.lm, cfg.lm_weight, cfg.word_bonus, cfg.beam, cfg.prune
                    )
                )
    out = {"greedy": error_rate(refs, greedy), "beam": error_rate(refs, beam)}
    if words is not None:
        out["words"] = word_error_rate(word_refs, word_hyps)
        known = set(words.lm.unigram)
        ref_words = [w for r in word_refs for w in r]
        out["words"]["test_oov_rate"] = round(
            sum(w not in known for w in ref_words) / max(len(ref_words), 1), 4
        )
        out["words"]["examples"] = [
            {"ref": " ".join(r), "hyp": " ".join(h)} for r, h in list(zip(word_refs, word_hyps))[:3]
        ]
    return out


def subset(cuts: CutSet, fraction: float, seed: int) -> CutSet:
    """A seeded ``fraction`` of ``cuts`` (nested: a smaller fraction is a subset of a larger
    one with the same seed); at least one cut."""
    ids = sorted(c.id for c in cuts)
    order = np.random.default_rng(seed).permutation(len(ids))
    keep = {ids[i] for i in order[: max(1, round(fraction * len(ids)))]}
    return cuts.filter(lambda c: c.id in keep).to_eager()


def run_asr(
    feature_dir: Pathlike,
    out_dir: Pathlike,
    fractions: tuple[float, ...] = (0.1, 0.3, 1.0),
    cfg: AsrConfig | None = None,
) -> dict[str, Any]:
    """Train and score a recogniser on each ``fraction`` of the dump's train split; writes
    ``out_dir/frac<f>/model.pt`` and ``out_dir/results.json`` and returns the results."""
    from cpc.io import write_json_atomic

    cfg = cfg or AsrConfig()
    out_dir = Path(out_dir)
    train, dim = load_asr_cuts(feature_dir, "train")
    test, test_dim = load_asr_cuts(feature_dir, "test")
    info = require_info(feature_dir)
    words = build_word_model(train) if cfg.words else None
    rows = []
    for f in fractions:
        if not 0 < f <= 1:
            raise AsrError(f"training fraction {f} is outside (0, 1]; use e.g. 0.1 0.3 1.0")
        part = subset(train, f, cfg.seed)
        hours = sum(c.duration for c in part) / 3600
        logging.info(f"{feature_dir}: training on {f:.0%} of the train split ({hours:.3f} h)")
        model, log = train_recognizer(part, dim, cfg)
        scores = evaluate(model, test, test_dim, cfg, words)
        d = out_dir / f"frac{f:g}"
        d.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"model": model.state_dict(), "dim": dim, "config": asdict(cfg)}, d / "model.pt.tmp"
        )
        (d / "model.pt.tmp").replace(d / "model.pt")
        rows.append(
            {
                "fraction": f,
                "train_hours": round(hours, 4),
                "train_cuts": len(part),
                **log,
                "seconds_per_epoch_per_hour": round(
                    log["train_seconds"] / log["epochs"] / hours, 1
                ),
                "cpu_seconds_per_epoch_per_hour": round(
                    log["train_cpu_seconds"] / log["epochs"] / hours, 1
                ),
                **scores,
            }
        )
        logging.info(
            f"{feature_dir} ({f:.0%}, {hours:.3f} h): PER greedy "
            f"{100 * scores['greedy']['per']:.2f} %, beam {100 * scores['beam']['per']:.2f} %"
            + (f", WER {100 * scores['words']['wer']:.2f} %" if words is not None else "")
        )
    result = {
        "feature_dir": str(feature_dir),
        "feature_type": info.get("feature_type"),
        "dim": dim,
        "config": asdict(cfg),
        "test_cuts": len(test),
        "vocabulary": None
        if words is None
        else {
            "words": words.vocabulary,
            "source": "train split transcripts",
            "no_pronunciation": words.no_pronunciation,
        },
        "rows": rows,
    }
    write_json_atomic(out_dir / "results.json", result)
    return result


def load_recognizer(path: Pathlike) -> PhoneRecognizer:
    """A recogniser saved by :func:`run_asr`."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    c = ckpt["config"]
    model = PhoneRecognizer(int(ckpt["dim"]), c["hidden"], c["layers"], c["subsample"])
    model.load_state_dict(ckpt["model"])
    return model


def results_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows: PER (greedy / beam) and, when decoded, WER per feature set and training
    fraction."""
    fracs = sorted({r["fraction"] for res in results.values() for r in res["rows"]})
    head = "| features | dim | " + " | ".join(
        f"{f:.0%} ({_hours(results, f)} h): PER greedy / beam; WER" for f in fracs
    )
    lines = [head + " |", "|" + "---|" * (2 + len(fracs))]
    for name, res in results.items():
        cells = []
        by_f = {r["fraction"]: r for r in res["rows"]}
        for f in fracs:
            r = by_f.get(f)
            if r is None:
                cells.append("-")
                continue
            cell = f"{100 * r['greedy']['per']:.2f} / {100 * r['beam']['per']:.2f}"
            if "words" in r:
                cell += f"; {100 * r['words']['wer']:.2f}"
            cells.append(cell)
        lines.append(f"| {name} | {res['dim']} | " + " | ".join(cells) + " |")
    return lines


def _hours(results: dict[str, dict[str, Any]], f: float) -> str:
    for res in results.values():
        for r in res["rows"]:
            if r["fraction"] == f:
                return f"{r['train_hours']:.3f}"
    return "?"


__all__ = [
    "AsrConfig",
    "AsrError",
    "FeatureDumpError",
    "PhoneRecognizer",
    "beam_decode",
    "error_rate",
    "greedy_decode",
    "run_asr",
]
