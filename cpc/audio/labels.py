"""Frame-level phone labels -> labelled lhotse cuts (stage 1 of ``egs/librispeech100``).

Input, in the format of the CPC release (van den Oord et al., 2018) for train-clean-100:

    LABELS_DIR/converted_aligned_phones.txt  "<utt-id> i1 i2 ..." one class id per 10 ms frame
    LABELS_DIR/train_split.txt               one utterance id per line
    LABELS_DIR/test_split.txt                one utterance id per line
    LABELS_DIR/phones.txt                    optional: "<symbol> <id>" lines, ids 0..K-1

The CPC release has no phones.txt. Its 41 class ids are then named with the built-in list
:data:`CPC_PHONES` (SIL = 0, the 39 ARPAbet phones in alphabetical order = 1..39, SPN = 40);
the release does not publish its own id -> phone table, so with its labels these names are
only display names: the probes use the ids.

Together with the stage-0 manifests (:mod:`cpc.audio.librispeech`) this writes:

    MANIFEST_DIR/librispeech_cuts_{train,test}.jsonl.gz   lhotse MonoCuts, cut id = utterance
        id, each with the custom field ``phone_labels``: a lhotse ``TemporalArray``
        (frame_shift 0.01, temporal_dim 0, start 0) of int64 class ids, one per 10 ms frame,
        exactly ``compute_num_frames(cut.duration, 0.01, 16000)`` frames, so
        ``cut.load_phone_labels()`` returns them.
    MANIFEST_DIR/phone_labels_{train,test}/   the arrays: lhotse ``NumpyFilesWriter`` storage,
        one ``.npy`` per utterance (``<first 3 chars of id>/<utt-id>.npy``); the cuts refer to
        this directory by its absolute path.
    LANG_DIR/phones.txt   "<symbol> <id>" for ids 0..K-1.

The CPC release's alignments are a few frames shorter than the audio (Kaldi frames); a
difference of up to ``max_frame_diff`` frames is fixed by repeating the last label or
trimming, a larger one stops the stage with the utterance named.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.features.io import NumpyFilesWriter
from tqdm import tqdm

from cpc.audio.constants import FRAME_SHIFT, LABEL_FIELD, PHONES, cuts_path, num_frames
from cpc.audio.constants import labels_dir as labels_storage_dir
from cpc.audio.librispeech import (
    LIBRISPEECH_PART,
    MAX_EXAMPLES,
    DataPrepError,
    atomic_manifest_path,
    ensure_output_dir,
    manifest_paths,
)
from cpc.features import fit_length
from cpc.io import Pathlike, atomic_open, atomic_path

#: The 41 phone classes when the labels dir has no phones.txt: id = position in this tuple.
CPC_PHONES = PHONES
ALIGNMENT_FILE = "converted_aligned_phones.txt"
SPLIT_FILES = {"train": "train_split.txt", "test": "test_split.txt"}
PHONES_FILE = "phones.txt"


@dataclass
class CpcLabels:
    """Phone labels in the CPC release format, as read by :func:`read_cpc_labels`.

    Attributes:
        labels_dir: the directory read.
        phones: ``phones[i]`` is the symbol of class id ``i``.
        phones_file: the phones.txt read, or None when the built-in CPC_PHONES was used.
        alignments: utterance id -> int64 array of class ids, one per 10 ms frame.
        lines: utterance id -> its line number in converted_aligned_phones.txt.
        splits: "train"/"test" -> utterance ids in file order (duplicates removed).
    """

    labels_dir: Path
    phones: list[str]
    phones_file: Path | None
    alignments: dict[str, np.ndarray]
    lines: dict[str, int]
    splits: dict[str, list[str]]

    @property
    def num_classes(self) -> int:
        return len(self.phones)

    @property
    def alignment_file(self) -> Path:
        return self.labels_dir / ALIGNMENT_FILE


def read_phones(path: Pathlike) -> list[str]:
    """Read a "<symbol> <id>" table; ids must be 0..K-1 (any order), symbols unique.
    Returns the symbols indexed by id."""
    path = Path(path)
    by_id: dict[int, str] = {}
    where: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not _is_int(fields[1]):
                raise DataPrepError(
                    f"{path}:{lineno}: expected '<symbol> <integer id>', got '{line.strip()}'; "
                    "fix the line"
                )
            sym, idx = fields[0], int(fields[1])
            if idx in by_id or sym in where:
                raise DataPrepError(
                    f"{path}:{lineno}: symbol '{sym}' or id {idx} appears twice; "
                    "each symbol and each id must be listed once"
                )
            by_id[idx] = sym
            where[sym] = lineno
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) < 2:
        raise DataPrepError(
            f"{path}: ids must be 0..K-1 with K >= 2, got {len(by_id)} ids from "
            f"{min(by_id, default=None)} to {max(by_id, default=None)}; renumber the table"
        )
    return [by_id[i] for i in range(len(by_id))]


def write_phones(path: Pathlike, phones: list[str] | tuple[str, ...]) -> None:
    """Write "<symbol> <id>" lines (id = position), atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(_phones_text(phones))


def _phones_text(phones: list[str] | tuple[str, ...]) -> str:
    return "".join(f"{sym} {i}\n" for i, sym in enumerate(phones))


def read_split(path: Pathlike) -> list[str]:
    """Read a split file (one utterance id per line; blank lines ignored). Duplicates are
    dropped with a warning."""
    path = Path(path)
    ids: list[str] = []
    seen: set[str] = set()
    dups: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 1:
                raise DataPrepError(
                    f"{path}:{lineno}: expected one utterance id per line, got "
                    f"'{line.strip()}'; fix the line"
                )
            if fields[0] in seen:
                dups.append(fields[0])
                continue
            seen.add(fields[0])
            ids.append(fields[0])
    if dups:
        logging.warning(
            f"{path}: {len(dups)} utterance ids are listed more than once (kept once), e.g. "
            + ", ".join(dups[:MAX_EXAMPLES])
        )
    return ids


def read_alignments(
    path: Pathlike, num_classes: int
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Read converted_aligned_phones.txt ("<utt-id> i1 i2 ..." per line).

    Returns ``(alignments, lines)``: utterance id -> int64 array, and -> line number.
    Raises DataPrepError (file:line, the bad token, the fix) for a non-integer token, an id
    outside 0..num_classes-1, a line without labels or a repeated utterance.
    """
    path = Path(path)
    alignments: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(tqdm(f, desc=f"Reading {path.name}", unit=" utts"), 1):
            fields = line.split()
            if not fields:
                continue
            utt, tokens = fields[0], fields[1:]
            where = f"{path}:{lineno}"
            if not tokens:
                raise DataPrepError(
                    f"{where}: utterance {utt} has no labels; "
                    "delete the line or restore the file from the release"
                )
            if utt in lines:
                raise DataPrepError(
                    f"{where}: utterance {utt} already has labels at line {lines[utt]}; "
                    "delete one of the lines"
                )
            try:
                ids = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):
                ids = None
            if ids is None or ids.min() < 0 or ids.max() >= num_classes:
                col, tok = _first_bad_token(tokens, num_classes)
                raise DataPrepError(
                    f"{where}: utterance {utt}, frame {col}: '{tok}' is not a class id "
                    f"(an integer in 0..{num_classes - 1}); fix the file (re-download or "
                    f"re-convert it), or give --labels-dir a {PHONES_FILE} listing all classes"
                )
            alignments[utt] = ids
            lines[utt] = lineno
    if not alignments:
        raise DataPrepError(f"{path} holds no labels; restore it from the CPC release")
    return alignments, lines


def _is_int(tok: str) -> bool:
    try:
        int(tok)
    except ValueError:
        return False
    return True


def _first_bad_token(tokens: list[str], num_classes: int) -> tuple[int, str]:
    for i, tok in enumerate(tokens):
        if not _is_int(tok) or not 0 <= int(tok) < num_classes:
            return i, tok
    raise AssertionError("no bad token")  # pragma: no cover


def read_cpc_labels(labels_dir: Pathlike) -> CpcLabels:
    """Read a labels directory in the CPC release format (see the module docstring).

    Raises DataPrepError for a missing directory or file, a malformed line (file:line),
    or an utterance in both splits.
    """
    labels_dir = Path(labels_dir)
    fix = (
        "point --labels-dir at the CPC release's labels (converted_aligned_phones.txt, "
        "train_split.txt, test_split.txt)"
    )
    if not labels_dir.is_dir():
        raise DataPrepError(f"labels dir {labels_dir} does not exist: {fix}")
    for name in (ALIGNMENT_FILE, *SPLIT_FILES.values()):
        if not (labels_dir / name).is_file():
            raise DataPrepError(f"labels dir {labels_dir} has no {name}: {fix}")

    phones_file: Path | None = labels_dir / PHONES_FILE
    if phones_file.is_file():
        phones = read_phones(phones_file)
        logging.info(f"{len(phones)} phone classes from {phones_file}")
    else:
        phones_file = None
        phones = list(CPC_PHONES)
        logging.info(
            f"{labels_dir} has no {PHONES_FILE} (as in the CPC release): using the built-in "
            f"{len(phones)}-class list SIL=0, the 39 ARPAbet phones in alphabetical order "
            "(AA=1 ... ZH=39), SPN=40. The release does not publish its id->phone table, "
            "so these names are display names only; the ids are what the probes use"
        )

    alignments, lines = read_alignments(labels_dir / ALIGNMENT_FILE, len(phones))
    splits = {split: read_split(labels_dir / name) for split, name in SPLIT_FILES.items()}
    both = sorted(set(splits["train"]) & set(splits["test"]))
    if both:
        raise DataPrepError(
            f"{len(both)} utterances are in both {labels_dir / SPLIT_FILES['train']} and "
            f"{labels_dir / SPLIT_FILES['test']}, e.g. {', '.join(both[:MAX_EXAMPLES])}; "
            "remove them from one of the files (train and test must not overlap)"
        )
    logging.info(
        f"{len(alignments)} labelled utterances; split: {len(splits['train'])} train, "
        f"{len(splits['test'])} test"
    )
    return CpcLabels(labels_dir, phones, phones_file, alignments, lines, splits)


def attach_phone_labels(
    manifest_dir: Pathlike,
    labels_dir: Pathlike,
    lang_dir: Pathlike,
    max_frame_diff: int = 3,
    part: str = LIBRISPEECH_PART,
) -> dict[str, CutSet]:
    """Build the train/test cuts of stage 1 with per-frame phone labels attached.

    Args:
        manifest_dir: holds the stage-0 manifests; receives the cut manifests and the
            label arrays (see the module docstring for the exact files).
        labels_dir: labels in the CPC release format (:func:`read_cpc_labels`).
        lang_dir: receives phones.txt.
        max_frame_diff: label/audio frame-count differences up to this many frames are
            padded (repeating the last label) or trimmed; larger ones are errors.
        part: the LibriSpeech part of the stage-0 manifests.

    Returns:
        ``{"train": CutSet, "test": CutSet}`` sorted by id, as written to disk. Split
        utterances without audio or without labels are reported (count and examples) and
        left out; a split left empty is an error. Every output is written atomically: on
        any error the files already on disk are left unchanged.
    """
    manifest_dir, lang_dir = Path(manifest_dir), Path(lang_dir)
    rec_path, sup_path = manifest_paths(manifest_dir, part)
    for p in (rec_path, sup_path):
        if not p.is_file():
            raise DataPrepError(
                f"{p} not found: run stage 0 (local/prepare_manifests.py) first, or pass the "
                "--manifest-dir it wrote to"
            )
    ensure_output_dir(manifest_dir, "--manifest-dir")
    ensure_output_dir(lang_dir, "--lang-dir")
    if max_frame_diff < 0:
        raise DataPrepError(f"--max-frame-diff must be >= 0, got {max_frame_diff}")

    labels = read_cpc_labels(labels_dir)
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_file(rec_path),
        supervisions=SupervisionSet.from_file(sup_path),
    )
    # from_manifests names cuts "<recording-id>-<index>": the contract is cut id == utterance id.
    by_id = {c.recording_id: c.with_id(c.recording_id) for c in cuts}
    if len(by_id) != len(cuts):
        raise DataPrepError(f"{rec_path}: recording ids are not unique; re-run stage 0")

    selected: dict[str, list] = {}
    too_far: list[str] = []
    fixed: Counter[int] = Counter()
    for split, ids in labels.splits.items():
        split_file = labels.labels_dir / SPLIT_FILES[split]
        no_audio = [u for u in ids if u not in by_id]
        no_labels = [u for u in ids if u in by_id and u not in labels.alignments]
        reasons = {
            "audio (not in the stage-0 manifests)": no_audio,
            f"labels (not in {labels.alignment_file})": no_labels,
        }
        for what, missing in reasons.items():
            if missing:
                logging.warning(
                    f"{split_file}: {len(missing)} of {len(ids)} utterances have no {what} "
                    f"and are left out, e.g. {', '.join(missing[:MAX_EXAMPLES])}"
                )
        chosen = []
        for utt in ids:
            if utt not in by_id or utt not in labels.alignments:
                continue
            cut = by_id[utt]
            ali = labels.alignments[utt]
            expected = num_frames(cut.duration, cut.sampling_rate)
            diff = len(ali) - expected
            if abs(diff) > max_frame_diff:
                too_far.append(
                    f"utterance {utt}: {len(ali)} label frames "
                    f"({labels.alignment_file}:{labels.lines[utt]}) but audio has {expected} "
                    f"frames ({cut.duration:.2f} s)"
                )
                continue
            if diff:
                fixed[diff] += 1
            chosen.append((cut, fit_length(ali, expected)))
        if not chosen and not too_far:
            raise DataPrepError(
                f"{split_file}: none of its {len(ids)} utterances has both audio and labels; "
                "check that --labels-dir belongs to the corpus given to stage 0"
            )
        selected[split] = sorted(chosen, key=lambda x: x[0].id)
    if too_far:
        raise DataPrepError(
            f"{len(too_far)} utterances have label frame counts that differ from their audio "
            f"by more than --max-frame-diff {max_frame_diff}: "
            + "; ".join(too_far[:MAX_EXAMPLES])
            + (" ..." if len(too_far) > MAX_EXAMPLES else "")
            + ". Check that the labels belong to this corpus (same LibriSpeech part and "
            "version), or remove these utterances from the split files"
        )
    if fixed:
        detail = ", ".join(
            f"{n} {abs(d)} frames {'short (padded)' if d < 0 else 'long (trimmed)'}"
            for d, n in sorted(fixed.items())
        )
        logging.info(
            f"{sum(fixed.values())} utterances have labels that differ from the audio by at "
            f"most --max-frame-diff {max_frame_diff} frames; fixed by repeating the last label "
            f"or trimming: {detail}"
        )
    unused = len(set(labels.alignments) - {u for ids in labels.splits.values() for u in ids})
    if unused:
        logging.info(f"{unused} labelled utterances are in neither split (not used)")

    result = _write_labelled_cuts(selected, manifest_dir, lang_dir, labels.phones)
    _report(result, labels.num_classes)
    return result


def _write_labelled_cuts(
    selected: dict[str, list], manifest_dir: Path, lang_dir: Path, phones: list[str]
) -> dict[str, CutSet]:
    result: dict[str, CutSet] = {}
    with ExitStack() as stack:
        for split, chosen in selected.items():
            final_dir = Path(os.path.abspath(labels_storage_dir(manifest_dir, split)))
            tmp_dir = stack.enter_context(atomic_path(final_dir))
            labelled = []
            with NumpyFilesWriter(tmp_dir) as writer:
                for cut, ali in tqdm(chosen, desc=f"Writing {split} labels", unit=" utts"):
                    arr = writer.store_array(cut.id, ali, frame_shift=FRAME_SHIFT, temporal_dim=0)
                    arr = replace(arr, array=replace(arr.array, storage_path=str(final_dir)))
                    labelled.append(cut.with_custom(LABEL_FIELD, arr))
            result[split] = CutSet.from_cuts(labelled)
            tmp = stack.enter_context(atomic_manifest_path(cuts_path(manifest_dir, split)))
            result[split].to_file(tmp)
        f = stack.enter_context(atomic_open(lang_dir / PHONES_FILE, "w", encoding="utf-8"))
        f.write(_phones_text(phones))
    return result


def _report(result: dict[str, CutSet], num_classes: int) -> None:
    speakers = {
        split: {c.supervisions[0].speaker for c in cuts if c.supervisions}
        for split, cuts in result.items()
    }
    for split, cuts in result.items():
        hours = sum(c.duration for c in cuts) / 3600
        logging.info(
            f"{split}: {len(cuts)} cuts, {len(speakers[split])} speakers, {hours:.2f} h, "
            f"{num_classes} phone classes"
        )
    for a, b in (("train", "test"), ("test", "train")):
        only = sorted(speakers[a] - speakers[b])
        if only:
            logging.warning(
                f"{len(only)} speakers appear only in the {a} split (a speaker probe cannot "
                f"score them), e.g. {', '.join(only[:MAX_EXAMPLES])}"
            )
