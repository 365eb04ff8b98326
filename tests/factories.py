"""Factories for test fixtures: small synthetic corpora, manifests, dumps and models written
into a test's ``tmp_path``. Every test module builds its fixtures from here.

- :func:`make_tiny_corpus`: a LibriSpeech-layout corpus + CPC-release labels (below);
- :func:`make_labelled_manifests`: that corpus through stages 0-1 (labelled cuts, lang dir);
- :func:`tiny_cuts`: lhotse cuts over a tiny corpus, without labels (training data);
- :func:`tiny_cpc_extractor`: an untrained tiny CPC model as a feature extractor;
- :func:`mfcc_dump`: a stage-3 MFCC dump of labelled manifests.

``make_tiny_corpus(root)`` writes a LibriSpeech-layout corpus plus CPC-release-style labels:

    root/LibriSpeech/SPEAKERS.TXT
    root/LibriSpeech/train-clean-100/SPK/CHAP/SPK-CHAP.trans.txt
    root/LibriSpeech/train-clean-100/SPK/CHAP/SPK-CHAP-NNNN.flac   16 kHz mono, 1-3 s
    root/labels/converted_aligned_phones.txt   "<utt-id> i1 i2 ..." (one id per 10 ms frame)
    root/labels/train_split.txt, test_split.txt   80/20 by utterance, every speaker in both
    root/labels/phones.txt   the 41 classes of cpc.audio.labels.CPC_PHONES: SIL 0, the 39
                             ARPAbet phones in alphabetical order 1..39 (AA 1 ... ZH 39), SPN 40

Speaker ids are 100, 111, 122, ... (100 + 11 i); chapter ids 1000 + 100 i + j; utterance ids
"SPK-CHAP-NNNN". Each speaker has its own tone frequency (plus noise), so audio differs by
speaker. Labels have exactly ``compute_num_frames(duration, 0.01, 16000)`` frames, or
``label_frame_diff`` fewer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse.utils import compute_num_frames

from cpc.audio.constants import PHONES as CPC_PHONES

SAMPLING_RATE = 16000
WORDS = "the cat sat on a mat while seven dogs ran past quietly into green fields".upper().split()


@dataclass
class TinyCorpus:
    """What :func:`make_tiny_corpus` wrote.

    Attributes:
        corpus_dir: the LibriSpeech root (holds train-clean-100/ and SPEAKERS.TXT).
        labels_dir: converted_aligned_phones.txt, train_split.txt, test_split.txt, phones.txt.
        utt_ids: all utterance ids, sorted.
        speakers: speaker ids (strings), sorted.
        genders: speaker -> "M" / "F" (as written to SPEAKERS.TXT).
        num_frames: utterance -> compute_num_frames(duration, 0.01, 16000) of its audio.
        labels: utterance -> the label ids written (``label_frame_diff`` shorter than
            num_frames).
        splits: "train" / "test" -> utterance ids.
        texts: utterance -> transcript.
    """

    corpus_dir: Path
    labels_dir: Path
    utt_ids: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    genders: dict[str, str] = field(default_factory=dict)
    num_frames: dict[str, int] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    @property
    def part_dir(self) -> Path:
        return self.corpus_dir / "train-clean-100"

    def flac(self, utt_id: str) -> Path:
        """Path of an utterance's .flac."""
        spk, chap, _ = utt_id.split("-")
        return self.part_dir / spk / chap / f"{utt_id}.flac"

    def trans(self, utt_id: str) -> Path:
        """Path of the .trans.txt listing an utterance."""
        spk, chap, _ = utt_id.split("-")
        return self.part_dir / spk / chap / f"{spk}-{chap}.trans.txt"


def make_tiny_corpus(
    root: Path,
    speakers: int = 2,
    chapters: int = 2,
    utts: int = 3,
    seed: int = 0,
    label_frame_diff: int = 0,
    min_duration: float = 1.0,
    max_duration: float = 3.0,
    write_phones: bool = True,
) -> TinyCorpus:
    """Write a tiny LibriSpeech-layout corpus and its labels under ``root``.

    Args:
        root: directory to write into (created).
        speakers, chapters, utts: corpus size: utts utterances per chapter, chapters per
            speaker. Each speaker needs at least 2 utterances (one per split).
        seed: seeds durations, audio and labels.
        label_frame_diff: every utterance's labels are this many frames shorter than its
            audio's ``compute_num_frames`` (0: exact).
        min_duration, max_duration: utterance durations in seconds (uniform, sample-exact,
            deliberately not a multiple of 10 ms).
        write_phones: False leaves phones.txt out (like the CPC release).

    Returns:
        A :class:`TinyCorpus` describing what was written.
    """
    if chapters * utts < 2:
        raise ValueError("each speaker needs at least 2 utterances (one per split)")
    rng = np.random.default_rng(seed)
    root = Path(root)
    corpus = TinyCorpus(corpus_dir=root / "LibriSpeech", labels_dir=root / "labels")
    corpus.part_dir.mkdir(parents=True, exist_ok=True)
    corpus.labels_dir.mkdir(parents=True, exist_ok=True)

    speaker_lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for i in range(speakers):
        spk = str(100 + 11 * i)
        gender = "F" if i % 2 == 0 else "M"
        corpus.speakers.append(spk)
        corpus.genders[spk] = gender
        speaker_lines.append(f"{spk:<5}| {gender} | train-clean-100  | 25.00 | Reader {i}")
        tone = 110.0 + 40.0 * i
        spk_utts: list[str] = []
        for j in range(chapters):
            chap = str(1000 + 100 * i + j)
            chap_dir = corpus.part_dir / spk / chap
            chap_dir.mkdir(parents=True, exist_ok=True)
            lines = []
            for k in range(utts):
                utt = f"{spk}-{chap}-{k:04d}"
                n = int(
                    rng.integers(
                        int(min_duration * SAMPLING_RATE), int(max_duration * SAMPLING_RATE)
                    )
                )
                t = np.arange(n) / SAMPLING_RATE
                wave = 0.3 * np.sin(2 * np.pi * tone * t) + 0.05 * rng.standard_normal(n)
                sf.write(chap_dir / f"{utt}.flac", wave.astype(np.float32), SAMPLING_RATE)
                text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 7))))
                lines.append(f"{utt} {text}\n")
                frames = compute_num_frames(n / SAMPLING_RATE, 0.01, SAMPLING_RATE)
                corpus.num_frames[utt] = frames
                corpus.labels[utt] = _random_phone_runs(rng, frames - label_frame_diff)
                corpus.texts[utt] = text
                spk_utts.append(utt)
            (chap_dir / f"{spk}-{chap}.trans.txt").write_text("".join(lines))
        n_test = max(1, round(0.2 * len(spk_utts)))
        test_idx = set(rng.choice(len(spk_utts), size=n_test, replace=False).tolist())
        corpus.splits.setdefault("train", []).extend(
            u for x, u in enumerate(spk_utts) if x not in test_idx
        )
        corpus.splits.setdefault("test", []).extend(
            u for x, u in enumerate(spk_utts) if x in test_idx
        )
    (corpus.corpus_dir / "SPEAKERS.TXT").write_text("\n".join(speaker_lines) + "\n")
    corpus.utt_ids = sorted(corpus.num_frames)

    with open(corpus.labels_dir / "converted_aligned_phones.txt", "w") as f:
        for utt in corpus.utt_ids:
            f.write(utt + " " + " ".join(map(str, corpus.labels[utt].tolist())) + "\n")
    for split in ("train", "test"):
        text = "".join(f"{u}\n" for u in corpus.splits[split])
        (corpus.labels_dir / f"{split}_split.txt").write_text(text)
    if write_phones:
        text = "".join(f"{sym} {i}\n" for i, sym in enumerate(CPC_PHONES))
        (corpus.labels_dir / "phones.txt").write_text(text)
    return corpus


def _random_phone_runs(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Labels that look like an alignment: silence, then phone runs of 3-12 frames."""
    out = np.empty(max(num_frames, 0), dtype=np.int64)
    pos = 0
    cls = 0  # start in silence
    while pos < len(out):
        run = int(rng.integers(3, 13))
        out[pos : pos + run] = cls
        pos += run
        cls = int(rng.integers(0, len(CPC_PHONES)))
    return out


#: The model section of a tiny CPC speech model (16 channels, c_t of 8 dims).
TINY_MODEL = {"channels": 16, "context_dim": 8, "prediction_steps": 2, "num_negatives": 2}


def make_labelled_manifests(
    root: Path, speakers: int = 2, chapters: int = 2, utts: int = 3, seed: int = 0
) -> tuple[Path, Path, TinyCorpus]:
    """Stage 0-1 outputs for a tiny corpus: ``(root/manifests, root/lang, corpus)``."""
    from cpc.audio.labels import attach_phone_labels
    from cpc.audio.librispeech import prepare_librispeech_manifests

    corpus = make_tiny_corpus(
        root / "corpus", speakers=speakers, chapters=chapters, utts=utts, seed=seed
    )
    prepare_librispeech_manifests(corpus.corpus_dir, root / "manifests", num_jobs=1)
    attach_phone_labels(root / "manifests", corpus.labels_dir, root / "lang")
    return root / "manifests", root / "lang", corpus


def tiny_cuts(root: Path, speakers: int = 4, utts: int = 3, seed: int = 0):
    """Cuts over a tiny LibriSpeech-layout corpus (1-3 s utterances, speaker = SPK)."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    corpus = make_tiny_corpus(root, speakers=speakers, chapters=1, utts=utts, seed=seed)
    recs = RecordingSet.from_recordings(
        Recording.from_file(corpus.flac(u), recording_id=u) for u in corpus.utt_ids
    )
    sups = SupervisionSet.from_segments(
        SupervisionSegment(u, u, 0.0, recs[u].duration, speaker=u.split("-")[0])
        for u in corpus.utt_ids
    )
    return CutSet.from_manifests(recordings=recs, supervisions=sups)


def tiny_cpc_extractor(seed: int = 0, **model: object):
    """An untrained tiny CPC model (:data:`TINY_MODEL` + ``model``) as a CPCExtractor."""
    import torch

    from cpc.audio.extractor import CPCExtractor
    from cpc.audio.model import build_cpc_model

    torch.manual_seed(seed)
    return CPCExtractor.from_model(build_cpc_model({**TINY_MODEL, **model}))


def mfcc_dump(manifests: Path, out: Path, parts: tuple[str, ...] = ("train", "test")) -> Path:
    """A stage-3 MFCC dump of ``manifests`` in ``out``; returns ``out``."""
    from cpc.audio.constants import DUMP_SPEC
    from cpc.audio.extractor import batch_fn_for, mfcc_source
    from cpc.features import dump_features

    ext, source = mfcc_source()
    dump_features(manifests, out, batch_fn_for(ext), "mfcc", 39, source, DUMP_SPEC, parts=parts)
    return out


REPO_ROOT = Path(__file__).resolve().parents[1]


def make_recipe_copy(dst: Path, recipe: str | Path = "librispeech100") -> Path:
    """A recipe directory (``egs/<recipe>``, or a path) as a user would set one up
    elsewhere: run.sh, cmd.sh and conf/ copied; utils/, local/ and path.sh linked (as Kaldi's
    egs link steps/ and utils/)."""
    src = Path(recipe) if Path(recipe).is_absolute() else REPO_ROOT / "egs" / str(recipe)
    dst.mkdir()
    for name in ("run.sh", "cmd.sh"):
        shutil.copy2(src / name, dst / name)
    shutil.copytree(src / "conf", dst / "conf")
    for name in ("local", "utils", "path.sh"):
        (dst / name).symlink_to((src / name).resolve())
    return dst


def run_recipe(d: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """``./run.sh ARGS`` in the recipe copy ``d``; with ``ok``, asserts it succeeded and
    shows the ends of its output when not."""
    r = subprocess.run(
        ["./run.sh", *args], cwd=d, capture_output=True, text=True, env={**os.environ}
    )
    if ok:
        assert r.returncode == 0, (
            f"run.sh {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
        )
    return r


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a test's torch.distributed rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_gloo(rank: int, world_size: int, port: int) -> None:
    """Join a one-thread gloo process group on 127.0.0.1:``port`` (a test's worker)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
