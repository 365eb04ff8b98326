"""Training windows for CPC on speech: fixed-length waveform windows from lhotse cuts.

Input: the stage-1 train cuts (``data/manifests/librispeech_cuts_train.jsonl.gz``), a lhotse
CutSet whose cuts carry a speaker in ``supervisions[0].speaker``.

Windows. Every epoch, a cut of ``L`` samples gives ``L // window`` non-overlapping windows at a
random shift in ``[0, L mod window]``, so an epoch covers nearly all the audio and the window
boundaries move between epochs. Cuts shorter than one window are skipped (logged with their
count and duration): zero-padding them would hand the contrastive task frames of pure
silence that are trivially predictable, and LibriSpeech utterances are a few seconds or more,
far above the 1.28 s window.

Batches. A *global batch* of one optimizer step has ``batch_size * world_size * grad_accum``
windows and is made of chunks of ``windows_per_speaker`` windows from one speaker (1 = plain
random windows). Chunks are shuffled, so a global batch has about ``batch_size /
windows_per_speaker`` speakers per micro-batch: what the same-speaker negative strategies
need. The global batch is cut into ``world_size * grad_accum`` consecutive micro-batches of
``batch_size`` (whole chunks each); rank ``r`` gets micro-batches ``r * grad_accum`` to
``(r + 1) * grad_accum - 1``. The ranks' parts are disjoint and their union is the global
batch a single process with the same global batch would see. The plan of epoch ``e`` depends
only on ``(seed, e)`` and the global batch size; the data position ``{"epoch", "batch"}``
(the next global batch) is all a resumed run needs.

Validation. :func:`split_valid` holds out a fixed share of the usable cuts (chosen by a hash
of their ids: the same cuts for every seed and every run), and :class:`ValidWindows` turns
them into a fixed list of batches (non-overlapping windows from each cut's start, grouped
by speaker like the training batches), on which the trainer measures the held-out loss.

Data identity. :func:`data_signature` fingerprints the training cuts by what they are, not
where they live: ids, segment boundaries, speakers and a fingerprint of every audio file
(its size and a hash of its first and last 64 KiB, which in a FLAC file include the MD5 of
all its decoded samples). A corpus rebuilt with other audio (a clean variant, another seed)
gets another signature; the same corpus moved elsewhere keeps its signature.

Audio is read with soundfile straight from the file (seeking to the window) when the cut is
a plain single-file, single-channel recording at the model's sampling rate, else through
``cut.truncate(...).load_audio()``. Batches: ``{"wave": (n, window) float32, "group": (n,)
int64 speaker index}``, and with ``with_labels`` (the supervised phone baseline) ``"phone":
(n, window // 160) int64``: for every 10 ms frame of the window, the stage-1 label of the cut
frame holding that frame's centre sample (:func:`window_frame_labels`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet
from lhotse.utils import compute_num_samples
from torch.utils.data import DataLoader, Dataset, Sampler

from cpc.audio.config import AudioDataConfig
from cpc.audio.constants import HOP, LABEL_FIELD, SAMPLING_RATE, cuts_path
from cpc.io import Pathlike

TRAIN_CUTS = cuts_path(".", "train").name
_SF_SUFFIXES = {".flac", ".wav", ".ogg"}
_FINGERPRINT_BYTES = 1 << 16


class AudioDataError(ValueError):
    """The cuts cannot provide the requested training windows."""


def train_cuts_path(manifest_dir: Pathlike) -> Path:
    """The stage-1 train cuts: ``<manifest_dir>/librispeech_cuts_train.jsonl.gz``."""
    return cuts_path(manifest_dir, "train")


def load_train_cuts(manifest_dir: Pathlike) -> CutSet:
    """Load the stage-1 train cuts; FileNotFoundError (saying how to make them) if missing."""
    path = train_cuts_path(manifest_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run stages 0-1 first (./run.sh --stage 0 --stop-stage 1)"
        )
    return CutSet.from_file(path)


@dataclass
class _CutTable:
    """What the loader needs of every usable cut, in plain arrays (cheap to send to workers)."""

    ids: list[str]
    paths: list[str | None]  # soundfile fast path, else None
    cuts: list[Any]  # the cut for the lhotse path, else None
    file_offsets: np.ndarray  # int64: first sample of the cut in its file
    lengths: np.ndarray  # int64: samples
    groups: np.ndarray  # int64: speaker index
    labels: list[np.ndarray] | None = None  # per cut: stage-1 phone label of every 10 ms frame


def _fast_path(cut: Any, sample_rate: int) -> str | None:
    if not cut.has_recording:
        return None
    rec = cut.recording
    if rec.sampling_rate != sample_rate or rec.num_channels != 1 or rec.transforms:
        return None
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        return None
    src = str(rec.sources[0].source)
    return src if Path(src).suffix.lower() in _SF_SUFFIXES else None


def window_frame_labels(labels: np.ndarray, start: int, num_frames: int) -> np.ndarray:
    """Labels of the ``num_frames`` 10 ms frames of a window starting at sample ``start`` of a
    cut whose frame ``i`` (samples ``[160 i, 160 i + 160)``) has label ``labels[i]``: window
    frame ``j`` takes the label of the cut frame holding its centre sample
    ``start + 160 j + 80`` (the last label past the end; -100 when the cut has none)."""
    if len(labels) == 0:
        return np.full(num_frames, -100, dtype=np.int64)
    idx = (start + HOP * np.arange(num_frames) + HOP // 2) // HOP
    return labels[np.minimum(idx, len(labels) - 1)].astype(np.int64)


def _cut_labels(cut: Any) -> np.ndarray:
    """The stage-1 phone labels of a cut; AudioDataError when it has none."""
    if not (cut.custom and LABEL_FIELD in cut.custom):
        raise AudioDataError(
            f"cut {cut.id} has no {LABEL_FIELD}; the supervised phone objective needs the "
            "labelled cuts of stage 1 (run stages 0-1)"
        )
    return np.asarray(cut.load_custom(LABEL_FIELD)).reshape(-1)


def _speaker(cut: Any) -> str | None:
    for s in cut.supervisions:
        if s.speaker:
            return str(s.speaker)
    return None


class WindowDataset(Dataset):
    """Reads the windows of one batch: item ``(epoch, index, specs (n, 2), next_position)``
    with ``specs[j] = (cut index, start sample within the cut)`` -> ``(batch, next_position)``.
    """

    def __init__(self, table: _CutTable, window: int, sample_rate: int) -> None:
        self.table = table
        self.window = window
        self.sample_rate = sample_rate

    def read(self, ci: int, start: int) -> np.ndarray:
        """``window`` samples of cut ``ci`` from ``start`` (float32)."""
        t, w = self.table, self.window
        path = t.paths[ci]
        if path is not None:
            try:
                x, _ = sf.read(
                    path,
                    start=int(t.file_offsets[ci]) + start,
                    frames=w,
                    dtype="float32",
                    always_2d=True,
                )
            except Exception as e:
                raise AudioDataError(f"cut {t.ids[ci]}: cannot read {path}: {e}") from e
            x = x[:, 0]
        else:
            cut = t.cuts[ci]
            sr = self.sample_rate
            x = cut.truncate(offset=start / sr, duration=w / sr, preserve_id=True).load_audio()
            x = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])[0]
        if len(x) < w:
            if w - len(x) > HOP:
                raise AudioDataError(
                    f"cut {t.ids[ci]}: the manifest says {t.lengths[ci]} samples but only "
                    f"{start + len(x)} could be read ({path or 'lhotse'}); the audio file is "
                    "shorter than its manifest: re-run stage 0"
                )
            x = np.pad(x, (0, w - len(x)))
        return x[:w]

    def __getitem__(self, item: tuple) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        _, _, specs, next_pos = item
        waves = np.stack([self.read(int(ci), int(st)) for ci, st in specs])
        groups = self.table.groups[specs[:, 0]]
        batch = {"wave": torch.from_numpy(waves), "group": torch.from_numpy(groups.copy())}
        if self.table.labels is not None:
            n = self.window // HOP
            lab = [window_frame_labels(self.table.labels[int(c)], int(s), n) for c, s in specs]
            batch["phone"] = torch.from_numpy(np.stack(lab))
        return batch, dict(next_pos)


class _PlanSampler(Sampler):
    """Yields this rank's part of every global batch, forever, from a data position."""

    def __init__(
        self, data: AudioWindowData, start: dict[str, int], rank: int, world: int, accum: int
    ) -> None:
        self.data, self.start = data, start
        self.rank, self.world, self.accum = rank, world, accum

    def __iter__(self) -> Iterator[tuple]:
        per_rank = self.data.cfg.batch_size * self.accum
        global_batch = per_rank * self.world
        epoch, index = int(self.start.get("epoch", 0)), int(self.start.get("batch", 0))
        while True:
            plan = self.data.epoch_plan(epoch, global_batch)
            for i in range(index, len(plan)):
                nxt = (
                    {"epoch": epoch, "batch": i + 1}
                    if i + 1 < len(plan)
                    else {"epoch": epoch + 1, "batch": 0}
                )
                local = plan[i, self.rank * per_rank : (self.rank + 1) * per_rank]
                yield (epoch, i, local, nxt)
            epoch, index = epoch + 1, 0


def _usable(cut: Any, window: int, sample_rate: int) -> Any | None:
    """The cut at the model's rate if it holds at least one window, else None."""
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    n = cut.num_samples
    return cut if n is not None and n >= window else None


def _build_table(
    cuts: Any,
    window: int,
    sample_rate: int,
    speaker_index: dict[str, int] | None = None,
    with_labels: bool = False,
) -> tuple[_CutTable, list[str]]:
    """The table of the cuts long enough for one window, and the sorted speaker list (or
    ``speaker_index``'s, when given: a speaker not in it gets a new index past its end; the
    dict is not changed). Short cuts and cuts without a speaker are logged. ``with_labels``:
    also the cuts' stage-1 phone labels."""
    ids, paths, keep, offsets, lengths, speakers = [], [], [], [], [], []
    labels: list[np.ndarray] = []
    skipped, skipped_s, no_spk = 0, 0.0, 0
    for cut in cuts:
        usable = _usable(cut, window, sample_rate)
        if usable is None:
            skipped += 1
            skipped_s += cut.duration
            continue
        cut = usable
        spk = _speaker(cut)
        if spk is None:
            no_spk += 1
            spk = cut.recording_id
        path = _fast_path(cut, sample_rate)
        ids.append(cut.id)
        paths.append(path)
        keep.append(None if path is not None else cut)
        offsets.append(compute_num_samples(cut.start, sample_rate) if path else 0)
        lengths.append(cut.num_samples)
        speakers.append(spk)
        if with_labels:
            labels.append(_cut_labels(cut))
    if skipped:
        logging.info(
            f"skipped {skipped} cut(s) shorter than the {window}-sample window "
            f"({skipped_s / 60:.1f} min in total)"
        )
    if no_spk:
        logging.warning(
            f"{no_spk} cut(s) have no speaker in their supervisions; each is its own group"
        )
    names = (
        sorted(set(speakers))
        if speaker_index is None
        else sorted(speaker_index, key=speaker_index.get)
    )
    index = dict(speaker_index) if speaker_index else {s: i for i, s in enumerate(names)}
    table = _CutTable(
        ids=ids,
        paths=paths,
        cuts=keep,
        file_offsets=np.asarray(offsets, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        groups=np.asarray([index.setdefault(s, len(index)) for s in speakers], dtype=np.int64),
        labels=labels if with_labels else None,
    )
    return table, names


def _speaker_chunks(
    cut_idx: np.ndarray, groups: np.ndarray, m: int, rng: np.random.Generator
) -> np.ndarray:
    """Window numbers grouped into chunks of ``m`` windows of one speaker, in random order:
    ``(num_chunks, m)``. Windows are shuffled within each speaker first; a speaker's
    remainder (fewer than ``m`` windows) is dropped."""
    perm = rng.permutation(len(cut_idx))
    perm = perm[np.argsort(groups[cut_idx[perm]], kind="stable")]
    g = groups[cut_idx[perm]]
    bounds = np.flatnonzero(np.diff(g)) + 1
    group_start = np.repeat(
        np.concatenate([[0], bounds]), np.diff(np.concatenate([[0], bounds, [len(g)]]))
    )
    rank_in_group = np.arange(len(g)) - group_start
    group_size = np.bincount(g, minlength=int(groups.max(initial=0)) + 1)[g]
    usable = rank_in_group < (group_size // m) * m
    chunks = perm[usable].reshape(-1, m)
    return chunks[rng.permutation(len(chunks))]


def split_valid(
    cuts: Any, fraction: float, window: int, sample_rate: int
) -> tuple[list[Any], list[Any]]:
    """Hold out ``round(fraction * N)`` of the N cuts that hold a window (at least one when
    ``fraction > 0`` and N >= 2), chosen by the sha1 of their ids: the same cuts whatever the
    seed. Returns ``(train_cuts, valid_cuts)``; cuts too short for a window stay in train
    (where they are skipped and counted)."""
    cuts = list(cuts)
    usable = [c for c in cuts if _usable(c, window, sample_rate) is not None]
    n = 0 if fraction <= 0 else max(1 if len(usable) >= 2 else 0, round(fraction * len(usable)))
    n = min(n, len(usable) - 1) if usable else 0
    order = sorted(usable, key=lambda c: hashlib.sha1(c.id.encode()).hexdigest())
    held = {c.id for c in order[:n]}
    return [c for c in cuts if c.id not in held], [c for c in cuts if c.id in held]


def data_signature(cuts: Any) -> dict[str, Any]:
    """A content signature of ``cuts`` (see the module docstring): ``{"sha256", "cuts",
    "speakers", "hours"}``."""
    h = hashlib.sha256()
    prints: dict[str, str] = {}
    speakers: set[str] = set()
    total, count = 0.0, 0
    for cut in sorted(cuts, key=lambda c: c.id):
        spk = _speaker(cut)
        speakers.add(str(spk))
        sources = []
        if cut.has_recording:
            for src in cut.recording.sources:
                key = str(src.source)
                if key not in prints:
                    prints[key] = _file_fingerprint(key) if src.type == "file" else key
                sources.append(prints[key])
        rec = [cut.id, round(cut.start, 6), round(cut.duration, 6), cut.channel, spk, sources]
        h.update(json.dumps(rec).encode() + b"\n")
        total += cut.duration
        count += 1
    return {
        "sha256": h.hexdigest(),
        "cuts": count,
        "speakers": len(speakers),
        "hours": round(total / 3600, 4),
    }


def _file_fingerprint(path: str) -> str:
    """Size + sha256 of the first and last 64 KiB of a file (a FLAC header holds the MD5
    of all decoded samples)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(_FINGERPRINT_BYTES)
            f.seek(max(0, size - _FINGERPRINT_BYTES))
            tail = f.read(_FINGERPRINT_BYTES)
    except OSError as e:
        raise AudioDataError(f"cannot read {path}: {e}; re-run stage 0") from e
    return f"{size}:{hashlib.sha256(head + tail).hexdigest()[:32]}"


class AudioWindowData:
    """The speech :class:`cpc.trainer.TrainData`: deterministic, sharded, resumable windows.

    Args:
        cuts: lhotse cuts (the stage-1 train cuts, less the validation cuts).
        cfg: ``data`` section (window, batch_size per micro-batch, windows_per_speaker,
            num_workers, prefetch_factor).
        seed: fixes window shifts and batch composition of every epoch.
        sample_rate: the model's rate; cuts at another rate are resampled on load.
        pin_memory: pin batches (when training on GPU).
        with_labels: batches also carry the frames' phone labels (``"phone"``).
    """

    def __init__(
        self,
        cuts: Any,
        cfg: AudioDataConfig,
        seed: int,
        sample_rate: int = SAMPLING_RATE,
        pin_memory: bool = False,
        with_labels: bool = False,
    ) -> None:
        self.cfg, self.seed, self.sample_rate, self.pin_memory = cfg, seed, sample_rate, pin_memory
        w = cfg.window
        self.table, self.speakers = _build_table(cuts, w, sample_rate, with_labels=with_labels)
        if not self.table.ids:
            raise AudioDataError(
                f"no cut is at least {w} samples ({w / sample_rate:.2f} s) long; use a shorter "
                "data.window or a corpus with longer utterances"
            )
        ids = self.table.ids
        self.dataset = WindowDataset(self.table, w, sample_rate)
        logging.info(
            f"training data: {len(ids)} cuts, {len(self.speakers)} speakers, "
            f"{self.num_windows} windows of {w} samples per epoch "
            f"({self.table.lengths.sum() / sample_rate / 3600:.2f} h)"
        )

    @property
    def num_windows(self) -> int:
        """Windows per epoch (before dropping incomplete speaker chunks and batches)."""
        return int((self.table.lengths // self.cfg.window).sum())

    def epoch_plan(self, epoch: int, global_batch: int) -> np.ndarray:
        """``(num_batches, global_batch, 2)`` int64: (cut index, start sample) of every window
        of every global batch of ``epoch``. Depends only on (seed, epoch, global_batch)."""
        t, w, m = self.table, self.cfg.window, self.cfg.windows_per_speaker
        if global_batch % m != 0:
            raise AudioDataError(
                f"global batch {global_batch} is not a multiple of windows_per_speaker {m}"
            )
        rng = np.random.default_rng([self.seed, epoch])
        per_cut = t.lengths // w
        shift = (rng.random(len(per_cut)) * (t.lengths - per_cut * w + 1)).astype(np.int64)
        cut_idx = np.repeat(np.arange(len(per_cut)), per_cut)
        first = np.repeat(np.cumsum(per_cut) - per_cut, per_cut)
        starts = shift[cut_idx] + (np.arange(len(cut_idx)) - first) * w
        # Random order within each speaker, then whole chunks of m windows per speaker.
        chunks = _speaker_chunks(cut_idx, t.groups, m, rng)
        flat = chunks.reshape(-1)
        nb = len(flat) // global_batch
        if nb == 0:
            raise AudioDataError(
                f"an epoch has {len(flat)} usable windows, fewer than one global batch of "
                f"{global_batch} (batch_size x processes x grad_accum); use fewer processes, a "
                "smaller data.batch_size or more data"
            )
        flat = flat[: nb * global_batch]
        plan = np.stack([cut_idx[flat], starts[flat]], axis=-1)
        return plan.reshape(nb, global_batch, 2)

    def batches_per_epoch(self, world_size: int = 1, grad_accum: int = 1) -> int:
        """Optimizer steps per epoch for a given number of processes and accumulation."""
        return len(self.epoch_plan(0, self.cfg.batch_size * world_size * grad_accum))

    def batches(
        self,
        position: dict[str, int] | None,
        rank: int,
        world_size: int,
        grad_accum: int,
    ) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, int]]]:
        """Yield ``(this rank's batch, next position)`` forever from ``position``.

        The batch holds ``grad_accum * batch_size`` windows (``grad_accum`` micro-batches).
        """
        sampler = _PlanSampler(
            self, position or {"epoch": 0, "batch": 0}, rank, world_size, grad_accum
        )
        nw = self.cfg.num_workers
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            sampler=sampler,
            num_workers=nw,
            prefetch_factor=self.cfg.prefetch_factor if nw > 0 else None,
            pin_memory=self.pin_memory,
        )
        it = iter(loader)
        try:
            while True:
                yield next(it)
        finally:
            del it


class ValidWindows:
    """The held-out split as a :class:`cpc.trainer.ValidData`: a fixed list of batches.

    Every validation cut gives its non-overlapping windows from its start; windows are
    grouped into chunks of ``windows_per_speaker`` like training batches (a fixed shuffle,
    seed 0), at most ``cfg.valid_max_windows`` windows are kept, in whole batches of
    ``cfg.batch_size``. Batch ``i`` goes to rank ``i % world_size``. ``speaker_index``: number
    the speakers as the training data does (the supervised speaker objective);
    ``with_labels``: as :class:`AudioWindowData`."""

    def __init__(
        self,
        cuts: Any,
        cfg: AudioDataConfig,
        sample_rate: int = SAMPLING_RATE,
        speaker_index: dict[str, int] | None = None,
        with_labels: bool = False,
    ) -> None:
        w, m, bs = cfg.window, cfg.windows_per_speaker, cfg.batch_size
        self.table, self.speakers = _build_table(
            cuts, w, sample_rate, speaker_index, with_labels=with_labels
        )
        self.dataset = WindowDataset(self.table, w, sample_rate)
        per_cut = self.table.lengths // w
        cut_idx = np.repeat(np.arange(len(per_cut)), per_cut)
        first = np.repeat(np.cumsum(per_cut) - per_cut, per_cut)
        starts = (np.arange(len(cut_idx)) - first) * w
        if len(cut_idx):
            chunks = _speaker_chunks(cut_idx, self.table.groups, m, np.random.default_rng(0))
            flat = chunks.reshape(-1)
        else:
            flat = np.zeros(0, dtype=np.int64)
        n = min(len(flat), cfg.valid_max_windows) // bs * bs
        flat = flat[:n]
        self.plan = np.stack([cut_idx[flat], starts[flat]], axis=-1).reshape(-1, bs, 2)
        logging.info(
            f"validation data: {len(self.table.ids)} cuts, {len(self.speakers)} speakers, "
            f"{len(self.plan)} batches of {bs} windows"
        )

    def __len__(self) -> int:
        return len(self.plan)

    def eval_batches(
        self, rank: int, world_size: int
    ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """``(index, batch)`` of this rank's share: batches ``rank, rank + world_size, ...``."""
        for i in range(rank, len(self.plan), world_size):
            batch, _ = self.dataset[(0, i, self.plan[i], {})]
            yield i, batch
