"""LibriSpeech -> lhotse manifests (stage 0 of ``egs/librispeech100``).

Reads a LibriSpeech part in the corpus's own layout::

    LibriSpeech/SPEAKERS.TXT                                  (optional: speaker gender)
    LibriSpeech/train-clean-100/SPK/CHAP/SPK-CHAP.trans.txt   ("SPK-CHAP-UTT TEXT" lines)
    LibriSpeech/train-clean-100/SPK/CHAP/SPK-CHAP-UTT.flac    (16 kHz mono)

and writes the same two manifests lhotse's own LibriSpeech recipe writes (same names, same
ids), plus the chapter and, when SPEAKERS.TXT has it, the gender. The recordings and
supervisions are made by ``lhotse.recipes.prepare_librispeech`` when the part is in its layout
(``<root>/<part>/``) and every transcript line has its audio and text; the chapter and gender
are added on top. Otherwise (another layout, unpaired files, empty transcripts, or a file lhotse
cannot read) every file is read here, so each problem is reported with its file. Any part of
the corpus is accepted (``train-clean-360``, ``train-other-500``, ``dev-clean`` ...), and so is
any corpus in this layout:

    OUTPUT_DIR/librispeech_recordings_train-clean-100.jsonl.gz    one Recording per utterance
    OUTPUT_DIR/librispeech_supervisions_train-clean-100.jsonl.gz  one SupervisionSegment each:
        id = recording_id = "SPK-CHAP-UTT", start 0, duration = the recording's, channel 0,
        text, speaker "SPK", gender "M"/"F" (or absent), language "English",
        custom {"chapter": "CHAP"}

Audio paths in the recordings manifest are absolute, so the manifests work from any
directory. Problems in the corpus are reported with the file and the fix: a corrupted or
truncated .flac, or a transcript that is not UTF-8, stops the stage (``DataPrepError``);
transcript lines without audio and audio without a transcript line are counted, skipped and
reported as a warning.
"""

from __future__ import annotations

import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio.backend import audio_backend
from lhotse.qa import validate_recordings_and_supervisions
from lhotse.utils import fastcopy
from tqdm import tqdm

from cpc.audio.constants import HOP, PART, SAMPLING_RATE, recordings_path, supervisions_path
from cpc.io import Pathlike, atomic_path

LIBRISPEECH_PART = PART
# How many examples a counted warning or error lists.
MAX_EXAMPLES = 5

CheckAudio = Literal["header", "tail", "full"]


class DataPrepError(ValueError):
    """A problem with the input data. The message names the file (and line or utterance)
    and says how to fix it; command-line tools print it and exit 1, without a traceback."""


def manifest_paths(output_dir: Pathlike, part: str = LIBRISPEECH_PART) -> tuple[Path, Path]:
    """The (recordings, supervisions) manifest paths that stage 0 writes in ``output_dir``
    (the names lhotse's LibriSpeech recipe uses)."""
    return recordings_path(output_dir, part), supervisions_path(output_dir, part)


def ensure_output_dir(output_dir: Pathlike, option: str = "--output-dir") -> Path:
    """Create ``output_dir`` if needed; a ``DataPrepError`` says why it cannot be written."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataPrepError(
            f"cannot create output directory {output_dir}: {e.strerror or e}; "
            f"choose a writable location ({option}) or fix its permissions"
        ) from e
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise DataPrepError(
            f"output directory {output_dir} is not writable; "
            f"choose a writable location ({option}) or fix its permissions"
        )
    return output_dir


# cpc.io.atomic_path keeps the destination's suffix in its temporary name, so lhotse still
# infers ".jsonl.gz" from it.
atomic_manifest_path = atomic_path


def write_manifests_atomic(manifests: dict[Path, object]) -> None:
    """Write several lhotse manifests (``{path: manifest}``): all are written to temporary
    files first and renamed into place only when every one of them was written."""
    with ExitStack() as stack:
        for path, manifest in manifests.items():
            tmp = stack.enter_context(atomic_manifest_path(path))
            manifest.to_file(tmp)


def find_part_dir(corpus_dir: Pathlike, part: str = LIBRISPEECH_PART) -> Path:
    """Locate the ``part`` directory (e.g. ``train-clean-100``) given the LibriSpeech root,
    the part directory itself, or a directory holding ``LibriSpeech/``."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        what = "is not a directory" if corpus_dir.exists() else "does not exist"
        raise DataPrepError(
            f"corpus dir {corpus_dir} {what}: pass --corpus-dir pointing at the LibriSpeech "
            f"root that holds {part}/, or omit it to build the embedded corpus"
        )
    for candidate in (corpus_dir / part, corpus_dir / "LibriSpeech" / part):
        if candidate.is_dir():
            return candidate
    if corpus_dir.name == part or any(corpus_dir.glob("*/*/*.trans.txt")):
        return corpus_dir
    raise DataPrepError(
        f"corpus dir {corpus_dir} holds no {part}/ (nor LibriSpeech/{part}/): pass "
        f"--corpus-dir pointing at the LibriSpeech root that holds {part}/ (extract "
        f"{part}.tar.gz there), or omit it to build the embedded corpus"
    )


def read_speakers_txt(path: Pathlike) -> dict[str, str]:
    """Read LibriSpeech's SPEAKERS.TXT (``ID | SEX | SUBSET | MINUTES | NAME``, ';' comments)
    into ``{speaker_id: "M" or "F"}``. A missing file gives ``{}`` with a warning."""
    path = Path(path)
    if not path.is_file():
        logging.warning(f"no {path}: supervisions will have no gender")
        return {}
    genders: dict[str, str] = {}
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|", 4)]
            if len(fields) < 2 or not fields[0] or fields[1].upper() not in ("M", "F"):
                bad.append(lineno)
                continue
            genders[fields[0]] = fields[1].upper()
    if bad:
        logging.warning(
            f"{path}: {len(bad)} lines are not 'ID | SEX | ...' with SEX M or F and were "
            f"ignored, e.g. line {bad[0]}"
        )
    return genders


def _read_transcript(path: Path) -> str:
    """The text of a ``.trans.txt`` file, which must be UTF-8 (LibriSpeech's are ASCII).
    Other bytes raise a ``DataPrepError`` naming the file, line, offset and bytes, with the
    fix."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[: e.start].decode("utf-8")  # valid up to the first bad byte
        lineno = before.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1
        line_start = max(raw.rfind(b"\n", 0, e.start), raw.rfind(b"\r", 0, e.start)) + 1
        bad = " ".join(f"0x{x:02x}" for x in raw[e.start : e.end])
        name = path.name
        raise DataPrepError(
            f"{path}:{lineno}: not UTF-8 text (byte {bad} at byte {e.start - line_start} of "
            f"the line, {e.start} of the file): re-encode the file as UTF-8, e.g. in its "
            f"directory `iconv -f latin1 -t utf-8 {name} > {name}.utf8 && mv {name}.utf8 "
            f"{name}`, or re-extract it from the LibriSpeech archive"
        ) from e


@dataclass
class _Utterance:
    utt_id: str
    speaker: str
    chapter: str
    text: str
    audio: Path


def _scan_part(part_dir: Path) -> tuple[list[_Utterance], bool]:
    """Pair transcript lines with .flac files; report (and skip) unpaired ones. Returns the
    utterances and whether everything paired up with non-empty text."""
    utterances: list[_Utterance] = []
    seen: dict[str, str] = {}
    no_audio: list[str] = []
    no_text: list[str] = []
    empty_text: list[str] = []
    chapter_dirs = [
        c
        for s in sorted(part_dir.iterdir())
        if s.is_dir() and not s.name.startswith(".")
        for c in sorted(s.iterdir())
        if c.is_dir() and not c.name.startswith(".")
    ]
    for chap_dir in tqdm(chapter_dirs, desc="Scanning chapters", unit=" chapters"):
        spk, chap = chap_dir.parent.name, chap_dir.name
        flacs = {p.name[: -len(".flac")]: p for p in chap_dir.glob("*.flac")}
        trans = chap_dir / f"{spk}-{chap}.trans.txt"
        texts: dict[str, str] = {}
        if trans.is_file():
            # universal newlines, as open() in text mode reads them
            text_file = io.StringIO(_read_transcript(trans), newline=None)
            for lineno, line in enumerate(text_file, 1):
                fields = line.split(maxsplit=1)
                if not fields:
                    continue
                utt = fields[0]
                where = f"{trans}:{lineno}"
                if not utt.startswith(f"{spk}-{chap}-"):
                    raise DataPrepError(
                        f"{where}: utterance id '{utt}' does not belong to chapter "
                        f"{spk}/{chap} (expected '{spk}-{chap}-NNNN'); fix or delete the "
                        "line, or re-extract the corpus"
                    )
                if utt in seen:
                    raise DataPrepError(
                        f"{where}: utterance {utt} is listed twice (first at {seen[utt]}); "
                        "delete one of the lines"
                    )
                seen[utt] = where
                text = fields[1].strip() if len(fields) > 1 else ""
                if not text:
                    empty_text.append(where)
                if utt not in flacs:
                    no_audio.append(f"{utt} ({where}; no {chap_dir / (utt + '.flac')})")
                    continue
                texts[utt] = text
        for utt in sorted(flacs):
            if utt in texts:
                utterances.append(_Utterance(utt, spk, chap, texts[utt], flacs[utt]))
            else:
                no_text.append(f"{flacs[utt]} (no line in {trans})")
    if no_audio:
        logging.warning(
            f"{len(no_audio)} transcript lines have no audio and were skipped, e.g. "
            + "; ".join(no_audio[:MAX_EXAMPLES])
            + ". Re-extract the corpus if these files should exist."
        )
    if no_text:
        logging.warning(
            f"{len(no_text)} audio files have no transcript line and were skipped, e.g. "
            + "; ".join(no_text[:MAX_EXAMPLES])
        )
    if empty_text:
        logging.warning(
            f"{len(empty_text)} transcript lines have an utterance id but no text (kept with "
            f"empty text), e.g. {', '.join(empty_text[:MAX_EXAMPLES])}"
        )
    clean = not (no_audio or no_text or empty_text)
    return sorted(utterances, key=lambda u: u.utt_id), clean


def _read_recording(utt: _Utterance, check_audio: CheckAudio) -> Recording:
    """Read the header of one .flac (and, per ``check_audio``, decode its end or all of it)."""
    path = Path(os.path.abspath(utt.audio))
    return _check_recording(Recording.from_file(path, recording_id=utt.utt_id), path, check_audio)


def _check_recording(recording: Recording, path: Path, check_audio: CheckAudio) -> Recording:
    """Refuse a recording that is not 16 kHz mono with samples; per ``check_audio`` also
    decode its end or all of it."""
    if recording.sampling_rate != SAMPLING_RATE:
        raise DataPrepError(
            f"{path}: sampling rate {recording.sampling_rate} Hz, expected {SAMPLING_RATE}; "
            "LibriSpeech is 16 kHz: resample the file or re-extract the corpus"
        )
    if recording.num_channels != 1:
        raise DataPrepError(f"{path}: {recording.num_channels} channels, expected mono")
    if recording.num_samples <= 0:
        raise DataPrepError(f"{path}: the file holds no audio samples")
    if check_audio != "header":
        with sf.SoundFile(str(path)) as f:
            n = recording.num_samples
            if check_audio == "tail":
                start = max(n - HOP, 0)
                f.seek(start)
            else:
                start = 0
            got = len(f.read(n - start, dtype="int16"))
        if got != n - start:
            raise DataPrepError(
                f"{path}: the header says {n} samples but only {start + got} could be decoded"
            )
    return recording


def _read_recordings(
    utterances: list[_Utterance], num_jobs: int, check_audio: CheckAudio
) -> dict[str, Recording]:
    recordings: dict[str, Recording] = {}
    failures: list[str] = []
    with audio_backend("LibsndfileBackend"), ThreadPoolExecutor(max(num_jobs, 1)) as ex:
        futures = {ex.submit(_read_recording, u, check_audio): u for u in utterances}
        for fut in tqdm(
            as_completed(futures), total=len(futures), desc="Reading audio", unit=" files"
        ):
            utt = futures[fut]
            try:
                recordings[utt.utt_id] = fut.result()
            except DataPrepError as e:
                failures.append(str(e))
            except (RuntimeError, OSError, AssertionError, ValueError) as e:
                failures.append(f"{utt.audio}: {e}")
    if failures:
        failures.sort()
        raise DataPrepError(
            f"{len(failures)} audio files could not be read: "
            + "; ".join(failures[:MAX_EXAMPLES])
            + (" ..." if len(failures) > MAX_EXAMPLES else "")
            + ". Re-extract or re-download them from the LibriSpeech archive, or delete the "
            "utterance (its .flac and its line in the chapter's .trans.txt)"
        )
    return recordings


def _lhotse_manifests(
    part_dir: Path, part: str, utterances: list[_Utterance], num_jobs: int, check_audio: CheckAudio
) -> tuple[dict[str, Recording], dict[str, SupervisionSegment]] | None:
    """Recordings and supervisions of ``part`` made by ``lhotse.recipes.prepare_librispeech``
    (checked here like our own), or None when it cannot serve (the caller then reads every
    file itself, which names any bad file)."""
    from lhotse.recipes.librispeech import prepare_librispeech

    try:
        with audio_backend("LibsndfileBackend"):
            made = prepare_librispeech(
                part_dir.parent.resolve(), dataset_parts=[part], output_dir=None, num_jobs=num_jobs
            )[part]
    except Exception as e:  # noqa: BLE001 - any failure: fall back to reading file by file
        logging.warning(
            f"lhotse's prepare_librispeech could not prepare {part_dir} ({type(e).__name__}: "
            f"{e}); reading it file by file to find the problem"
        )
        return None
    recordings = {r.id: r for r in made["recordings"]}
    supervisions = {s.id: s for s in made["supervisions"]}
    if set(recordings) != {u.utt_id for u in utterances} or set(supervisions) != set(recordings):
        logging.warning(f"lhotse's prepare_librispeech found other utterances in {part_dir}")
        return None
    paths = {u.utt_id: Path(os.path.abspath(u.audio)) for u in utterances}
    try:
        with ThreadPoolExecutor(max(num_jobs, 1)) as ex:
            list(
                ex.map(lambda r: _check_recording(r, paths[r.id], check_audio), recordings.values())
            )
    except (DataPrepError, RuntimeError, OSError, ValueError) as e:
        logging.warning(f"{e}; reading every file of {part_dir} to list the problems")
        return None
    return recordings, supervisions


def prepare_librispeech_manifests(
    corpus_dir: Pathlike,
    output_dir: Pathlike,
    part: str = LIBRISPEECH_PART,
    num_jobs: int = 2,
    check_audio: CheckAudio = "tail",
) -> tuple[RecordingSet, SupervisionSet]:
    """Build and write the lhotse manifests of one LibriSpeech part.

    Args:
        corpus_dir: the LibriSpeech root (holding ``part``/ and SPEAKERS.TXT); the part
            directory itself, or a directory holding ``LibriSpeech/``, also work.
        output_dir: where the manifests go (created if needed).
        part: the LibriSpeech part, e.g. ``train-clean-100``.
        num_jobs: threads reading audio headers.
        check_audio: ``header`` reads headers only; ``tail`` also decodes the last 10 ms
            of each file (catches truncated files at almost no cost); ``full`` decodes
            every file completely.

    Returns:
        ``(recordings, supervisions)``, sorted by utterance id, also written to
        ``manifest_paths(output_dir, part)`` (atomically: on any error the files already
        there are left unchanged).

    Raises:
        DataPrepError: missing corpus, unreadable audio, malformed transcript, unwritable
            output directory, or no utterance at all.
    """
    if check_audio not in ("header", "tail", "full"):
        raise DataPrepError(f"check_audio must be header, tail or full, not '{check_audio}'")
    part_dir = find_part_dir(corpus_dir, part)
    output_dir = ensure_output_dir(output_dir)
    logging.info(f"reading LibriSpeech {part} from {part_dir}")
    genders = read_speakers_txt(part_dir.parent / "SPEAKERS.TXT")

    utterances, clean = _scan_part(part_dir)
    if not utterances:
        raise DataPrepError(
            f"no utterances found under {part_dir} (expected SPK/CHAP/SPK-CHAP-UTT.flac and "
            "SPK/CHAP/SPK-CHAP.trans.txt): check --corpus-dir"
        )
    made = None
    if clean and part_dir.name == part:
        made = _lhotse_manifests(part_dir, part, utterances, num_jobs, check_audio)
    if made is not None:
        logging.info(f"recordings and supervisions by lhotse's prepare_librispeech ({part})")
        recordings, lhotse_sups = made
    else:
        recordings, lhotse_sups = _read_recordings(utterances, num_jobs, check_audio), {}

    segments = []
    for u in utterances:
        rec = recordings[u.utt_id]
        extra = {"gender": genders.get(u.speaker), "custom": {"chapter": u.chapter}}
        if u.utt_id in lhotse_sups:  # lhotse's segment, with the chapter and gender added
            segments.append(fastcopy(lhotse_sups[u.utt_id], **extra))
            continue
        segments.append(
            SupervisionSegment(
                id=u.utt_id,
                recording_id=u.utt_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=u.text,
                language="English",
                speaker=u.speaker,
                **extra,
            )
        )
    no_gender = sorted({u.speaker for u in utterances} - set(genders))
    if genders and no_gender:
        logging.warning(
            f"{len(no_gender)} speakers are not in SPEAKERS.TXT (no gender), e.g. "
            + ", ".join(no_gender[:MAX_EXAMPLES])
        )
    recording_set = RecordingSet.from_recordings(recordings[u.utt_id] for u in utterances)
    supervision_set = SupervisionSet.from_segments(segments)
    try:
        validate_recordings_and_supervisions(recording_set, supervision_set)
    except AssertionError as e:
        raise DataPrepError(f"lhotse validation failed for {part_dir}: {e}") from e

    rec_path, sup_path = manifest_paths(output_dir, part)
    write_manifests_atomic({rec_path: recording_set, sup_path: supervision_set})
    hours = sum(r.duration for r in recording_set) / 3600
    logging.info(
        f"{len(recording_set)} utterances, {len({u.speaker for u in utterances})} speakers, "
        f"{len({(u.speaker, u.chapter) for u in utterances})} chapters, {hours:.2f} h "
        f"-> {rec_path}, {sup_path}"
    )
    return recording_set, supervision_set
