"""The speech domain's constants and file names, each defined once.

- Rates: 16 kHz audio, 10 ms frames (:data:`FRAME_SHIFT`), :data:`HOP` = 160 samples per
  frame. The CPC encoder's total stride must equal :data:`HOP` (checked at config load), so
  that model frames, feature dumps and phone labels share one clock.
- Frame count: :func:`num_frames` is lhotse's ``compute_num_frames``; every stage (labels,
  dumps, probes) uses it, so all agree on how many 10 ms frames an utterance has.
- Phones: the 41 classes of the CPC release (:data:`PHONES`: SIL = 0, the 39 ARPAbet phones
  in alphabetical order = 1..39, SPN = 40).
- Manifest names: the lhotse/icefall names of the LibriSpeech recipe
  (``librispeech_{recordings,supervisions}_<part>.jsonl.gz``, ``librispeech_cuts_<split>``,
  ``librispeech_feats_<split>``), built by the functions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lhotse.utils import compute_num_frames, compute_num_frames_from_samples

from cpc.features import DumpSpec
from cpc.features import cuts_path as _cuts_path
from cpc.features import storage_dir as _storage_dir
from cpc.io import Pathlike

SAMPLING_RATE = 16000
FRAME_SHIFT = 0.01
HOP = 160  # samples per frame: SAMPLING_RATE * FRAME_SHIFT
assert HOP == round(SAMPLING_RATE * FRAME_SHIFT)

#: The 39 CMU/ARPAbet phones without stress, in alphabetical order.
ARPABET: tuple[str, ...] = tuple(
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
    "UH UW V W Y Z ZH".split()
)
#: The 41 label classes: id 0 = SIL, 1..39 = ARPABET, 40 = SPN (spoken noise / unmappable).
PHONES: tuple[str, ...] = ("SIL", *ARPABET, "SPN")
PHONE_TO_ID: dict[str, int] = {p: i for i, p in enumerate(PHONES)}

#: The cut custom field holding the per-frame phone ids (a lhotse TemporalArray).
LABEL_FIELD = "phone_labels"
#: LibriSpeech part of the recipe.
PART = "train-clean-100"
#: Name prefix of the recipe's lhotse manifests and dumps.
PREFIX = "librispeech"
#: Splits of the stage-1 cuts.
SPLITS: tuple[str, ...] = ("train", "test")


def num_frames(duration: float, sampling_rate: int = SAMPLING_RATE) -> int:
    """10 ms frames of ``duration`` seconds of audio (lhotse's ``compute_num_frames``)."""
    return compute_num_frames(duration, FRAME_SHIFT, sampling_rate)


def num_frames_from_samples(num_samples: int, sampling_rate: int = SAMPLING_RATE) -> int:
    """10 ms frames of ``num_samples`` samples (the same count as :func:`num_frames`)."""
    return compute_num_frames_from_samples(num_samples, FRAME_SHIFT, sampling_rate)


def cut_num_frames(cut: Any) -> int:
    """10 ms frames of a lhotse cut (:func:`num_frames` of its duration at its rate)."""
    return num_frames(cut.duration, cut.sampling_rate)


#: How speech dumps are named and framed (see :mod:`cpc.features`).
DUMP_SPEC = DumpSpec(
    prefix=PREFIX, frame_shift=FRAME_SHIFT, num_frames=cut_num_frames, frame_unit="10 ms frames"
)


def recordings_path(manifest_dir: Pathlike, part: str = PART) -> Path:
    """Stage 0's recordings manifest."""
    return Path(manifest_dir) / f"{PREFIX}_recordings_{part}.jsonl.gz"


def supervisions_path(manifest_dir: Pathlike, part: str = PART) -> Path:
    """Stage 0's supervisions manifest."""
    return Path(manifest_dir) / f"{PREFIX}_supervisions_{part}.jsonl.gz"


def cuts_path(directory: Pathlike, split: str) -> Path:
    """A split's cut manifest: the stage-1 labelled cuts, or a stage-3 dump's cuts."""
    return _cuts_path(directory, split, PREFIX)


def feats_dir(directory: Pathlike, split: str) -> Path:
    """A stage-3 dump's storage directory of one split."""
    return _storage_dir(directory, split, PREFIX)


def labels_dir(manifest_dir: Pathlike, split: str) -> Path:
    """Stage 1's storage of the ``phone_labels`` arrays of one split."""
    return Path(manifest_dir) / f"{LABEL_FIELD}_{split}"
