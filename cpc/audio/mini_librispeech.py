"""The embedded mini-LibriSpeech: a small speech corpus synthesised with espeak-ng from Jane
Austen's novels, in LibriSpeech's exact layout, with ground-truth frame-level phone labels in
the format of the CPC paper's release.

``build_mini_librispeech(out_dir, speakers=40, minutes=120, clean=False, seed=42)`` writes::

    out_dir/
      LibriSpeech/
        SPEAKERS.TXT  CHAPTERS.TXT               (LibriSpeech's formats)
        train-clean-100/SPK/CHAPTER/
          SPK-CHAPTER-0000.flac ...              (16 kHz mono PCM_16)
          SPK-CHAPTER.trans.txt                  ("SPK-CHAPTER-0000 TRANSCRIPT IN UPPER CASE")
      labels/
        converted_aligned_phones.txt             ("<utt-id> i1 i2 ...", one class per 10 ms)
        train_split.txt  test_split.txt          (utterance ids, 80/20, every speaker in both)
        phones.txt                               ("<symbol> <id>", 41 classes)
      voices/<variant>                           (each speaker's espeak-ng voice variant file)
      info.json                                  (options, design, statistics, chance levels)

Speakers. One accent (espeak-ng ``en-us``) so that speaker identity is not given away by
pronunciation; half male, half female (one more female for an odd count). Each speaker has a
voice of their own, an espeak-ng voice variant file written for them (``cpc.audio.voices``:
vocal-tract length, articulation, formant bandwidths and strengths, spectral tilt,
breathiness, roughness, flutter, habitual pitch), a habitual rate (uniform 140..200
words/min) and intonation range (espeak 0-100 scale, 35..65); every utterance jitters pitch
(+-4 on espeak's 0-100 scale around 50, the voice's own pitch), range (+-5) and rate (+-8)
around them. The variant files are kept in ``out_dir/voices/``. Each speaker reads at least 2
chapters; a chapter is a run of consecutive sentences of one novel chapter.

Recording channels. Unless ``clean``, every chapter gets its own channel, fixed for the
chapter and drawn from the seed: a 2nd-order high-pass at 60-300 Hz, a 4th-order low-pass at
3.5-7.5 kHz, one or two peaking EQs (200 Hz-5 kHz, +-8 dB, Q 0.7-2.5), with probability 0.6 a
short room response (exponentially decaying noise, RT60 0.1-0.4 s, mixed 10-20 dB below the
direct sound), a stationary coloured noise floor (power spectrum 1/f^beta, beta 0-1.5) at
20-40 dB SNR, with probability 0.25 a faint mains hum (50 or 60 Hz and harmonics), and a
chapter gain. Speech is levelled to a fixed active-speech RMS before the noise is added, so
the noise floor is stationary within a chapter; utterances are peak-limited to avoid
clipping. ``clean=True`` keeps only the levelling.

Labels. espeak-ng reports for every phoneme the exact sample at which it starts; phonemes
are mapped to 39 ARPAbet phones + SIL + SPN (``ESPEAK_TO_ARPABET``), the phone spans mapped
from 22.05 kHz to 16 kHz with the audio (polyphase resampling by 320/441, which keeps time
zero), and every 10 ms frame ``i`` (samples ``[160 i, 160 i + 160)``) gets the phone active at
its centre sample ``160 i + 80``. Padding and pauses are SIL. The number of frames of an
utterance of ``n`` samples is lhotse's ``compute_num_frames(n / 16000, 0.01, 16000)``.

Reproducibility. The same options give byte-identical label files and identical audio: all
random choices come from ``numpy`` generators seeded from ``seed``, and each chapter is
synthesised in a fresh worker process (espeak-ng's output depends slightly on what the process
synthesised before).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import re
import shutil
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse.utils import compute_num_frames
from scipy import fft as sp_fft
from scipy import signal

from cpc.audio.constants import (
    FRAME_SHIFT,
    HOP,
    PART,
    PHONE_TO_ID,
    PHONES,
    SAMPLING_RATE,
    num_frames_from_samples,
)
from cpc.audio.espeak import find_espeak, stock_data_path
from cpc.audio.lexicon import Lexicon, cmudict_pronunciations
from cpc.audio.text import AUSTEN_BOOKS, BookChapter, Sentence, austen_chapters
from cpc.audio.voices import VoiceSpec, design_voice, make_data_dir
from cpc.io import Pathlike, atomic_path

log = logging.getLogger(__name__)

SAMPLE_RATE = SAMPLING_RATE
SUBSET = PART
MIN_SECONDS = 2.0
MAX_SECONDS = 15.0

#: The 41 label classes (cpc.audio.constants.PHONES): 0 = SIL, 1..39 = ARPAbet, 40 = SPN.
PHONE_SYMBOLS = PHONES
SIL_ID = PHONE_TO_ID["SIL"]
SPN_ID = PHONE_TO_ID["SPN"]

#: espeak-ng en-us phoneme mnemonics (stress marks ``'`` and ``,`` removed) -> ARPAbet.
#: A phoneme mapped to two phones has its span split in half (r-coloured and centring
#: diphthongs, syllabic consonants), the way CMU-dictionary alignments spell them.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # pauses: '_' pause, '_:' short pause, '_!' and '?' glottal closures (silent)
    "_": ("SIL",),
    "_:": ("SIL",),
    "_!": ("SIL",),
    "_^_": ("SIL",),
    "?": ("SIL",),
    # plosives and affricates; t# is the American flap, t2/d2 unreleased variants
    "p": ("P",),
    "b": ("B",),
    "t": ("T",),
    "t#": ("T",),
    "t2": ("T",),
    "d": ("D",),
    "d#": ("D",),
    "d2": ("D",),
    "k": ("K",),
    "g": ("G",),
    "tS": ("CH",),
    "dZ": ("JH",),
    # fricatives
    "f": ("F",),
    "v": ("V",),
    "T": ("TH",),
    "D": ("DH",),
    "s": ("S",),
    "z": ("Z",),
    "S": ("SH",),
    "Z": ("ZH",),
    "h": ("HH",),
    "x": ("HH",),
    # nasals, liquids, glides; ';' is the linking glide espeak puts after i before a vowel
    "m": ("M",),
    "n": ("N",),
    "N": ("NG",),
    "l": ("L",),
    "r": ("R",),
    "r-": ("R",),
    "w": ("W",),
    "W": ("W",),
    "j": ("Y",),
    ";": ("Y",),
    # syllabic consonants
    "@L": ("AH", "L"),
    "n-": ("AH", "N"),
    "m-": ("AH", "M"),
    # monophthongs
    "@": ("AH",),
    "@2": ("AH",),
    "@5": ("AH",),
    "@-": ("AH",),
    "a#": ("AH",),
    "V": ("AH",),
    "3": ("ER",),
    "3:": ("ER",),
    "a": ("AE",),
    "aa": ("AE",),
    "A": ("AA",),
    "A:": ("AA",),
    "0": ("AA",),
    "O": ("AO",),
    "O:": ("AO",),
    "O2": ("AO",),
    "E": ("EH",),
    "E2": ("EH",),
    "e": ("EH",),
    "I": ("IH",),
    "I#": ("IH",),
    "I2": ("IH",),
    "i": ("IY",),
    "i:": ("IY",),
    "U": ("UH",),
    "u": ("UW",),
    "u:": ("UW",),
    # diphthongs
    "aI": ("AY",),
    "aU": ("AW",),
    "eI": ("EY",),
    "oU": ("OW",),
    "OI": ("OY",),
    # r-coloured and centring diphthongs
    "A@": ("AA", "R"),
    "O@": ("AO", "R"),
    "o@": ("AO", "R"),
    "e@": ("EH", "R"),
    "i@3": ("IH", "R"),
    "U@": ("UH", "R"),
    "i@": ("IY", "AH"),
    "aI@": ("AY", "ER"),
    "aI3": ("AY", "ER"),
    "aU@": ("AW", "ER"),
}

#: ARPAbet (CMUdict) -> the espeak-ng en-us phoneme mnemonic that speaks it, for the corpus's
#: lexicon pronunciations (``pronunciations="cmudict"``). Each mnemonic maps back to the same
#: single phone through ``ESPEAK_TO_ARPABET``. Vowels carry CMUdict's stress as espeak's marks
#: (1 -> ``'``, 2 -> ``,``); unstressed AH, ER and IY use espeak's reduced vowels
#: (``ARPABET_TO_ESPEAK_UNSTRESSED``).
ARPABET_TO_ESPEAK: dict[str, str] = {
    "AA": "A:",
    "AE": "a",
    "AH": "V",
    "AO": "O:",
    "AW": "aU",
    "AY": "aI",
    "B": "b",
    "CH": "tS",
    "D": "d",
    "DH": "D",
    "EH": "E",
    "ER": "3:",
    "EY": "eI",
    "F": "f",
    "G": "g",
    "HH": "h",
    "IH": "I",
    "IY": "i:",
    "JH": "dZ",
    "K": "k",
    "L": "l",
    "M": "m",
    "N": "n",
    "NG": "N",
    "OW": "oU",
    "OY": "OI",
    "P": "p",
    "R": "r",
    "S": "s",
    "SH": "S",
    "T": "t",
    "TH": "T",
    "UH": "U",
    "UW": "u:",
    "V": "v",
    "W": "w",
    "Y": "j",
    "Z": "z",
    "ZH": "Z",
}
ARPABET_TO_ESPEAK_UNSTRESSED: dict[str, str] = {"AH": "@", "ER": "3", "IY": "i"}
PRONUNCIATIONS = ("cmudict", "espeak")
_TEXT_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


PITCH_CENTRE = 50  # espeakPITCH: 50 = the voice file's own pitch (jittered per utterance)
PITCH_RANGE_RANGE = (35, 65)  # espeakRANGE, per speaker
RATE_RANGE = (140, 200)  # espeakRATE (words per minute), per speaker
PITCH_JITTER, RANGE_JITTER, RATE_JITTER = 4, 5, 8  # per utterance, +-
TARGET_RMS = 0.05  # active-speech RMS after levelling (before the chapter gain)
PEAK_LIMIT = 0.95


class MiniLibriSpeechError(ValueError):
    """Bad options or an output location that cannot be written."""


def espeak_to_arpabet(phoneme: str) -> tuple[str, ...]:
    """Map an espeak-ng phoneme mnemonic (stress marks allowed) to 1-2 of ``PHONE_SYMBOLS``;
    unknown mnemonics map to ``("SPN",)``."""
    key = phoneme.lstrip("',%=")
    return ESPEAK_TO_ARPABET.get(key, ("SPN",))


def espeak_phoneme_input(phones: tuple[str, ...]) -> str:
    """A CMUdict pronunciation with stress digits (``("HH", "AH0", "L", "OW1")``) as espeak-ng
    phoneme input, phonemes separated by ``|`` so that no two merge into one mnemonic
    (``"[[h|@|l|'oU]]"``). Raises ``KeyError`` for a phone outside ARPAbet."""
    out = []
    for p in phones:
        base = p.rstrip("012")
        stress = p[len(base) :]
        if stress == "0":
            out.append(ARPABET_TO_ESPEAK_UNSTRESSED.get(base, ARPABET_TO_ESPEAK[base]))
        else:
            out.append({"1": "'", "2": ","}.get(stress, "") + ARPABET_TO_ESPEAK[base])
    return "[[" + "|".join(out) + "]]"


def lexicon_text(text: str, lexicon: Lexicon) -> tuple[str, int, int]:
    """The synthesiser's input for ``text`` with every word ``lexicon`` knows (a stressed
    CMUdict, see ``cmudict_pronunciations(stress=True)``) written as phoneme input, so it is
    spoken as the lexicon says; other words and the punctuation stay text (espeak-ng's rules
    speak them). Returns ``(input, words from the lexicon, words by espeak's rules)``."""
    parts: list[str] = []
    pos = n_lex = n_rules = 0
    for m in _TEXT_WORD.finditer(text):
        phones = lexicon.lookup(m.group())
        parts.append(text[pos : m.start()])
        if phones is None:
            parts.append(m.group())
            n_rules += 1
        else:
            parts.append(espeak_phoneme_input(phones))
            n_lex += 1
        pos = m.end()
    parts.append(text[pos:])
    return "".join(parts), n_lex, n_rules


def num_frames(num_samples: int) -> int:
    """Frames of an utterance of ``num_samples`` samples at 16 kHz with a 10 ms shift
    (lhotse's count, so labels line up with lhotse's features and cuts)."""
    return num_frames_from_samples(num_samples)


def frame_labels(spans: list[tuple[int, int, int]], num_samples: int) -> np.ndarray:
    """Class id per 10 ms frame: the class of the span covering the frame's centre sample
    ``160 i + 80`` (clipped to the last sample); SIL where no span covers it.

    spans: ``(class_id, start, end)`` half-open sample spans at 16 kHz (later spans win).
    Returns a uint8 array of ``num_frames(num_samples)`` frames.
    """
    per_sample = np.full(num_samples, SIL_ID, dtype=np.uint8)
    for cid, start, end in spans:
        if end > start:
            per_sample[max(start, 0) : min(end, num_samples)] = cid
    n = num_frames(num_samples)
    centres = np.minimum(np.arange(n) * HOP + HOP // 2, max(num_samples - 1, 0))
    return per_sample[centres] if num_samples else np.zeros(0, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Corpus design (parent process)
# ---------------------------------------------------------------------------------------------


@dataclass
class SpeakerSpec:
    """A synthetic reader: their own espeak voice variant + habitual prosody (jittered per
    utterance)."""

    id: int
    sex: str  # "M" or "F"
    variant: str  # the name of the speaker's variant file (voices/!v/<variant>)
    pitch_range: int
    rate: int
    voice_spec: VoiceSpec

    @property
    def voice(self) -> str:
        return f"en-us+{self.variant}"

    @property
    def name(self) -> str:
        v = self.voice_spec
        return (
            f"espeak {self.voice} f0 {v.pitch_hz} Hz vtl {v.vtl_scale:.3f} "
            f"range {self.pitch_range} rate {self.rate}"
        )


@dataclass
class ChannelSpec:
    """A chapter's recording channel (see the module docstring)."""

    highpass_hz: float
    lowpass_hz: float
    eq: list[dict[str, float]]  # [{"freq_hz", "gain_db", "q"}]
    rir: dict[str, float] | None  # {"rt60_s", "wet_db", "predelay_ms"} or None
    noise_snr_db: float
    noise_beta: float  # power spectrum ~ 1/f^beta
    hum: dict[str, float] | None  # {"freq_hz", "level_db"} relative to the noise floor
    gain_db: float


@dataclass
class ChapterJob:
    """Everything a worker needs to render one chapter."""

    index: int
    seed: int
    espeak_data: str  # the espeak-ng data directory holding the speakers' variants
    speaker: SpeakerSpec
    chapter_id: int
    book: str
    book_chapter: int
    target_seconds: float
    sentences: list[Sentence]
    channel: ChannelSpec | None
    out_dir: str  # the LibriSpeech/train-clean-100 directory
    #: per sentence: (synthesiser input, words from the lexicon, words by espeak's rules);
    #: None: the sentences' text, spoken by espeak's rules
    inputs: list[tuple[str, int, int]] | None = None


@dataclass
class UttResult:
    utt_id: str
    num_samples: int
    transcript: str
    labels: bytes  # uint8 class ids, one per frame


@dataclass
class ChapterResult:
    index: int
    utterances: list[UttResult]
    rejected: int
    unmapped: dict[str, int] = field(default_factory=dict)
    lexicon_words: int = 0  # words of the written utterances spoken from the lexicon
    rules_words: int = 0  # ... and by espeak's spelling rules
    cpu_seconds: float = 0.0  # the worker's CPU time (user + system) for this chapter


def design_speakers(n: int, rng: np.random.Generator) -> list[SpeakerSpec]:
    """``n`` speakers, half male (rounded down), ids unique 4-digit integers, each with a
    voice of their own (``cpc.audio.voices.design_voice``) named ``spk<id>``."""
    ids = sorted(int(i) for i in rng.choice(np.arange(1000, 10000), size=n, replace=False))
    sexes = ["M"] * (n // 2) + ["F"] * (n - n // 2)
    sexes = [sexes[i] for i in rng.permutation(n)]
    out = []
    for spk_id, sex in zip(ids, sexes):
        out.append(
            SpeakerSpec(
                id=spk_id,
                sex=sex,
                variant=f"spk{spk_id}",
                pitch_range=int(rng.integers(PITCH_RANGE_RANGE[0], PITCH_RANGE_RANGE[1] + 1)),
                rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
                voice_spec=design_voice(sex, rng),
            )
        )
    return out


def design_channel(rng: np.random.Generator) -> ChannelSpec:
    """Draw one recording channel."""
    r = lambda x: round(float(x), 3)  # noqa: E731
    eq = []
    for _ in range(int(rng.integers(1, 3))):
        eq.append(
            {
                "freq_hz": r(math.exp(rng.uniform(math.log(200), math.log(5000)))),
                "gain_db": r(rng.uniform(-8, 8)),
                "q": r(rng.uniform(0.7, 2.5)),
            }
        )
    rir = None
    if rng.uniform() < 0.6:
        rir = {
            "rt60_s": r(rng.uniform(0.1, 0.4)),
            "wet_db": r(rng.uniform(-20, -10)),
            "predelay_ms": r(rng.uniform(2, 10)),
        }
    hum = None
    if rng.uniform() < 0.25:
        hum = {"freq_hz": float(rng.choice([50.0, 60.0])), "level_db": r(rng.uniform(-6, 0))}
    return ChannelSpec(
        highpass_hz=r(math.exp(rng.uniform(math.log(60), math.log(300)))),
        lowpass_hz=r(rng.uniform(3500, 7500)),
        eq=eq,
        rir=rir,
        noise_snr_db=r(rng.uniform(20, 40)),
        noise_beta=r(rng.uniform(0.0, 1.5)),
        hum=hum,
        gain_db=r(rng.uniform(-4, 2)),
    )


def _chapters_per_speaker(per_speaker_minutes: float) -> int:
    return max(2, round(per_speaker_minutes / 5.0))


def _estimate_seconds(s: Sentence, rate: int) -> float:
    return s.num_words * 60.0 / rate + 0.6


def _pick_sentences(
    book_chapters: list[BookChapter], start: int, target_seconds: float, rate: int
) -> tuple[BookChapter, list[Sentence]]:
    """Consecutive sentences from book chapter ``start`` on (continuing into the next ones),
    enough for about 2.5x the target duration plus a margin."""
    first = book_chapters[start % len(book_chapters)]
    out: list[Sentence] = []
    est = 0.0
    i = start
    while est < 2.5 * target_seconds + 30.0 and i < start + len(book_chapters):
        for s in book_chapters[i % len(book_chapters)].sentences:
            out.append(s)
            est += _estimate_seconds(s, rate)
            if est >= 2.5 * target_seconds + 30.0:
                break
        i += 1
    return first, out


# ---------------------------------------------------------------------------------------------
# Rendering (worker processes)
# ---------------------------------------------------------------------------------------------


def _peaking_sos(freq: float, gain_db: float, q: float, fs: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking biquad as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * freq / fs
    alpha = math.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a]
    return np.array(
        [[b[0] / den[0], b[1] / den[0], b[2] / den[0], 1.0, den[1] / den[0], den[2] / den[0]]]
    )


class _Channel:
    """Applies a ``ChannelSpec``; its noise comes from the chapter's generator."""

    def __init__(self, spec: ChannelSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        fs = SAMPLE_RATE
        sos = [
            signal.butter(2, spec.highpass_hz, "highpass", fs=fs, output="sos"),
            signal.butter(4, min(spec.lowpass_hz, 0.47 * fs), "lowpass", fs=fs, output="sos"),
        ]
        sos += [_peaking_sos(e["freq_hz"], e["gain_db"], e["q"], fs) for e in spec.eq]
        self.sos = np.concatenate(sos)
        self.rir = None
        if spec.rir is not None:
            n = int(spec.rir["rt60_s"] * fs)
            pre = int(spec.rir["predelay_ms"] * fs / 1000)
            t = np.arange(n) / fs
            tail = rng.standard_normal(n) * np.exp(-6.908 * t / spec.rir["rt60_s"])
            tail *= 10 ** (spec.rir["wet_db"] / 20) / np.sqrt(np.sum(tail**2))
            h = np.zeros(pre + n)
            h[0] = 1.0
            h[pre:] += tail
            self.rir = h

    def noise(self, n: int) -> np.ndarray:
        """Unit-RMS stationary noise floor of ``n`` samples (coloured, plus optional hum)."""
        spec = self.spec
        m = sp_fft.next_fast_len(n, real=True)  # a fast FFT size; the excess is cut off
        white = self.rng.standard_normal(m)
        f = sp_fft.rfftfreq(m, 1 / SAMPLE_RATE)
        shape = np.maximum(f, 20.0) ** (-spec.noise_beta / 2)
        x = sp_fft.irfft(sp_fft.rfft(white) * shape, m)[:n]
        x /= np.sqrt(np.mean(x**2)) + 1e-12
        if spec.hum is not None:
            t = np.arange(n) / SAMPLE_RATE
            hum = np.zeros(n)
            for k, amp in ((1, 1.0), (2, 0.5), (3, 0.3)):
                hum += amp * np.sin(
                    2 * np.pi * k * spec.hum["freq_hz"] * t + self.rng.uniform(0, 6.283)
                )
            hum *= 10 ** (spec.hum["level_db"] / 20) / np.sqrt(np.mean(hum**2))
            x = (x + hum) / np.sqrt(1 + 10 ** (spec.hum["level_db"] / 10))
        return x

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.rir is not None:
            x = signal.fftconvolve(x, self.rir)[: len(x)]
        return signal.sosfilt(self.sos, x)


def _level(x: np.ndarray, speech: np.ndarray, target_rms: float) -> np.ndarray:
    active = x[speech] if speech.any() else x
    rms = float(np.sqrt(np.mean(active**2))) if active.size else 0.0
    return x * (target_rms / rms) if rms > 0 else x


def render_chapter(job: ChapterJob) -> ChapterResult:
    """Synthesise one chapter: FLAC files and the chapter's trans.txt under ``job.out_dir``;
    returns the utterances' frame labels. Meant to run in a fresh process."""
    from cpc.audio.espeak import get_espeak

    # separate streams: the speech (prosody jitter, padding) does not depend on the channel,
    # so clean and channel builds with one seed hold the same utterances and labels
    rng = np.random.default_rng([job.seed, job.index, 0])
    rng_channel = np.random.default_rng([job.seed, job.index, 1])
    tts = get_espeak(job.espeak_data)
    spk = job.speaker
    tts.set_voice(spk.voice)
    channel = _Channel(job.channel, rng_channel) if job.channel is not None else None
    gain = 10 ** ((job.channel.gain_db if job.channel else 0.0) / 20)
    chap_dir = Path(job.out_dir) / str(spk.id) / str(job.chapter_id)
    chap_dir.mkdir(parents=True, exist_ok=True)
    ratio = SAMPLE_RATE / tts.sample_rate
    up, down = _resample_ratio(tts.sample_rate)

    utts: list[UttResult] = []
    unmapped: Counter[str] = Counter()
    rejected = 0
    total = 0.0
    n_lex = n_rules = 0
    for k, sent in enumerate(job.sentences):
        if utts and total >= job.target_seconds - 0.5 * total / len(utts):
            break
        pitch = int(np.clip(PITCH_CENTRE + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
        prange = int(
            np.clip(spk.pitch_range + rng.integers(-RANGE_JITTER, RANGE_JITTER + 1), 0, 100)
        )
        rate = int(np.clip(spk.rate + rng.integers(-RATE_JITTER, RATE_JITTER + 1), 80, 450))
        lead = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
        trail = int(rng.uniform(0.15, 0.5) * SAMPLE_RATE)
        tts.set_parameters(rate=rate, pitch=pitch, pitch_range=prange)
        text, lex_words, rules_words = (
            job.inputs[k] if job.inputs is not None else (sent.text, 0, sent.num_words)
        )
        phonemes = job.inputs is not None
        syn = tts.synthesize(text, seed=int(rng.integers(1, 2**31)), phonemes=phonemes)
        audio = signal.resample_poly(syn.samples.astype(np.float64) / 32768.0, up, down)
        n = lead + len(audio) + trail
        if not MIN_SECONDS <= n / SAMPLE_RATE <= MAX_SECONDS:
            rejected += 1
            continue
        x = np.zeros(n)
        x[lead : lead + len(audio)] = audio

        spans: list[tuple[int, int, int]] = []
        for seg in syn.segments():
            phones = espeak_to_arpabet(seg.phoneme)
            if phones == ("SPN",):
                unmapped[seg.phoneme] += 1
            s16 = lead + min(round(seg.start * ratio), len(audio))
            e16 = lead + min(round(seg.end * ratio), len(audio))
            bounds = np.linspace(s16, e16, len(phones) + 1).round().astype(int)
            for p, a, b in zip(phones, bounds[:-1], bounds[1:]):
                spans.append((PHONE_TO_ID[p], int(a), int(b)))
        labels = frame_labels(spans, n)
        speech = np.zeros(n, dtype=bool)
        for cid, a, b in spans:
            if cid != SIL_ID:
                speech[a:b] = True

        if channel is not None:
            x = channel.apply(x)
            x = _level(x, speech, TARGET_RMS * gain)
            noise_rms = TARGET_RMS * gain / 10 ** (job.channel.noise_snr_db / 20)
            x = x + noise_rms * channel.noise(n)
        else:
            x = _level(x, speech, TARGET_RMS)
        peak = float(np.max(np.abs(x))) if n else 0.0
        if peak > PEAK_LIMIT:
            x *= PEAK_LIMIT / peak

        utt_id = f"{spk.id}-{job.chapter_id}-{len(utts):04d}"
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
        sf.write(chap_dir / f"{utt_id}.flac", pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        utts.append(UttResult(utt_id, n, sent.transcript, labels.tobytes()))
        total += n / SAMPLE_RATE
        n_lex += lex_words
        n_rules += rules_words
    with open(chap_dir / f"{spk.id}-{job.chapter_id}.trans.txt", "w") as f:
        for u in utts:
            f.write(f"{u.utt_id} {u.transcript}\n")
    return ChapterResult(job.index, utts, rejected, dict(unmapped), n_lex, n_rules)


def _resample_ratio(rate: int) -> tuple[int, int]:
    g = math.gcd(SAMPLE_RATE, rate)
    return SAMPLE_RATE // g, rate // g


def _mp_context() -> mp.context.BaseContext:
    """A start method that gives every chapter a fresh process not forked from a process that
    may have used espeak-ng: forkserver where available, else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["cpc.audio.mini_librispeech"])
        return ctx
    return mp.get_context("spawn")


# ---------------------------------------------------------------------------------------------
# Writing the corpus (parent process)
# ---------------------------------------------------------------------------------------------


def _speakers_txt(speakers: list[SpeakerSpec], minutes: dict[int, float]) -> str:
    lines = [
        "; Synthetic readers of the embedded mini-LibriSpeech (espeak-ng voices; see info.json).",
        "; Format as in LibriSpeech's SPEAKERS.TXT: reader id, sex, subset, minutes, name.",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for s in speakers:
        lines.append(f"{s.id:<5}| {s.sex} | {SUBSET:<17}| {minutes[s.id]:6.2f}| {s.name}")
    return "\n".join(lines) + "\n"


def _chapters_txt(rows: list[dict[str, Any]]) -> str:
    lines = [
        "; Chapters of the embedded mini-LibriSpeech; format as in LibriSpeech's CHAPTERS.TXT.",
        ";ID      |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE"
        "                          | PROJECT TITLE",
    ]
    book_ids = {b: i + 1 for i, b in enumerate(AUSTEN_BOOKS)}
    for r in rows:
        lines.append(
            f"{r['id']:<8}| {r['speaker']:<5}| {r['minutes']:6.2f}| {SUBSET:<17}| {0:<5}| "
            f"{book_ids.get(r['book'], 0):<6}| {('Chapter ' + str(r['book_chapter'])):<35}| "
            f"{AUSTEN_BOOKS.get(r['book'], r['book'])}"
        )
    return "\n".join(lines) + "\n"


def _split(
    utts_by_speaker: dict[int, list[str]], rng: np.random.Generator, test_fraction: float = 0.2
) -> tuple[list[str], list[str]]:
    train: list[str] = []
    test: list[str] = []
    for spk in sorted(utts_by_speaker):
        ids = sorted(utts_by_speaker[spk])
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = max(1, round(test_fraction * len(ids))) if len(ids) >= 2 else 0
        test += order[:n_test]
        train += order[n_test:]
    return sorted(train), sorted(test)


def _check_options(speakers: int, minutes: float, num_jobs: int) -> None:
    if not 1 <= speakers <= 2000:
        raise MiniLibriSpeechError(f"--speakers must be 1..2000, got {speakers}")
    if not (minutes > 0 and math.isfinite(minutes)):
        raise MiniLibriSpeechError(f"--minutes must be a positive number, got {minutes}")
    if num_jobs < 1:
        raise MiniLibriSpeechError(f"--num-jobs must be >= 1, got {num_jobs}")


def _check_writable(out_dir: Path) -> None:
    parent = out_dir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MiniLibriSpeechError(
            f"cannot create {parent} for the corpus {out_dir}: {e.strerror or e}; "
            "choose a writable --out-dir"
        ) from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MiniLibriSpeechError(
            f"{parent} is not writable, so the corpus {out_dir} cannot be built there; "
            "choose a writable --out-dir or fix the permissions"
        )


def build_mini_librispeech(
    out_dir: Pathlike,
    speakers: int = 40,
    minutes: float = 120.0,
    clean: bool = False,
    seed: int = 42,
    num_jobs: int = 2,
    text_root: Pathlike | None = None,
    pronunciations: str = "cmudict",
) -> dict[str, Any]:
    """Build the embedded mini-LibriSpeech in ``out_dir`` (replaced as a whole, atomically).

    speakers: number of readers (half male). minutes: total audio to synthesise (each chapter
    stops at its share; the total lands within about one utterance per chapter). clean: no
    recording channels. seed: all random choices. num_jobs: worker processes.
    text_root: the janeaustenr directory (default: see ``cpc.audio.text.find_janeaustenr``).
    pronunciations: ``"cmudict"`` (default) speaks every word CMUdict knows with CMUdict's
    first pronunciation (``lexicon_text``), the rest by espeak-ng's rules; ``"espeak"`` speaks
    every word by espeak-ng's rules. The labels are espeak-ng's phoneme events either way.

    Returns the summary also written to ``out_dir/info.json``. Raises
    ``MiniLibriSpeechError`` (bad options, unwritable location), ``FileNotFoundError``
    (espeak-ng or the Austen text missing, with the fix in the message).
    """
    t0, cpu0 = time.time(), time.process_time()
    out_dir = Path(out_dir)
    _check_options(speakers, minutes, num_jobs)
    if pronunciations not in PRONUNCIATIONS:
        raise MiniLibriSpeechError(
            f"pronunciations {pronunciations!r}: choose one of {', '.join(PRONUNCIATIONS)}"
        )
    _check_writable(out_dir)
    lib_path, _ = find_espeak()
    book_chapters = austen_chapters(text_root)
    if not book_chapters:
        raise MiniLibriSpeechError("the Austen text yielded no sentences")

    ss = np.random.SeedSequence(seed)
    rng_design, rng_channel, rng_split = (np.random.default_rng(s) for s in ss.spawn(3))
    spks = design_speakers(speakers, rng_design)
    per_speaker = minutes * 60.0 / speakers
    n_ch = _chapters_per_speaker(per_speaker / 60.0)
    chapter_ids = rng_design.choice(np.arange(10000, 300000), size=speakers * n_ch, replace=False)
    book_order = rng_design.permutation(len(book_chapters))
    lexicon = Lexicon(cmudict_pronunciations(stress=True)) if pronunciations == "cmudict" else None
    jobs: list[ChapterJob] = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        subset_dir = tmp / "LibriSpeech" / SUBSET
        subset_dir.mkdir(parents=True)
        variants = {s.variant: s.voice_spec.variant_file(s.variant, s.sex) for s in spks}
        (tmp / "voices").mkdir()
        for name, text in variants.items():
            (tmp / "voices" / name).write_text(text)
        espeak_data = make_data_dir(stock_data_path(), tmp / ".espeak-ng-data", variants)
        for si, spk in enumerate(spks):
            for ci in range(n_ch):
                k = si * n_ch + ci
                start = int(book_order[k % len(book_order)])
                first, sents = _pick_sentences(book_chapters, start, per_speaker / n_ch, spk.rate)
                jobs.append(
                    ChapterJob(
                        index=k,
                        seed=seed,
                        espeak_data=str(espeak_data.absolute()),
                        speaker=spk,
                        chapter_id=int(chapter_ids[k]),
                        book=first.book,
                        book_chapter=first.number,
                        target_seconds=per_speaker / n_ch,
                        sentences=sents,
                        channel=None if clean else design_channel(rng_channel),
                        out_dir=str(subset_dir),
                        inputs=None
                        if lexicon is None
                        else [lexicon_text(x.text, lexicon) for x in sents],
                    )
                )
        log.info(
            "synthesising %d speakers x %d chapters (%.1f min, %s) with %d jobs",
            speakers,
            n_ch,
            minutes,
            "clean" if clean else "audiobook channels",
            num_jobs,
        )
        results = _run_jobs(jobs, num_jobs)
        shutil.rmtree(espeak_data)  # links into the installed espeak-ng-data: not kept
        summary = _write_metadata(tmp, jobs, results, spks, rng_split, lib_path)
        summary["options"] = {
            "speakers": speakers,
            "minutes": minutes,
            "clean": clean,
            "seed": seed,
            "num_jobs": num_jobs,
            "pronunciations": pronunciations,
        }
        summary["build_seconds"] = round(time.time() - t0, 1)
        worker_cpu = sum(r.cpu_seconds for r in results)
        summary["build_cpu_seconds"] = {
            "workers": round(worker_cpu, 1),
            "main": round(time.process_time() - cpu0, 1),
        }
        summary = {"options": summary.pop("options"), **summary}
        (tmp / "info.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "wrote %s: %d utterances, %.1f min, %.0f s wall, CPU %.0f s in workers + %.0f s main",
        out_dir,
        summary["num_utterances"],
        summary["total_minutes"],
        summary["build_seconds"],
        summary["build_cpu_seconds"]["workers"],
        summary["build_cpu_seconds"]["main"],
    )
    return summary


def _chapter_process(job: ChapterJob, conn: Any) -> None:
    """Worker entry point: render one chapter and send the result (or the error) back."""
    try:
        result = render_chapter(job)
        result.cpu_seconds = round(time.process_time(), 3)  # the whole fresh process
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        try:
            conn.send(("error", (e, traceback.format_exc())))
        except Exception:  # noqa: BLE001 - unpicklable exception
            conn.send(("error", (None, traceback.format_exc())))
    finally:
        conn.close()


def _run_jobs(jobs: list[ChapterJob], num_jobs: int) -> list[ChapterResult]:
    """Render every chapter in its own fresh process, ``num_jobs`` at a time."""
    from multiprocessing.connection import wait

    from tqdm import tqdm

    ctx = _mp_context()
    pending = list(jobs)
    running: dict[Any, tuple[Any, ChapterJob]] = {}
    results: list[ChapterResult] = []
    try:
        with tqdm(total=len(jobs), desc="chapters", unit="ch", leave=False) as bar:
            while pending or running:
                while pending and len(running) < num_jobs:
                    job = pending.pop(0)
                    recv, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_chapter_process, args=(job, send), daemon=True)
                    proc.start()
                    send.close()
                    running[recv] = (proc, job)
                for conn in wait(list(running)):
                    proc, job = running.pop(conn)
                    try:
                        status, payload = conn.recv()
                    except EOFError:
                        status, payload = "died", None
                    conn.close()
                    proc.join()
                    if status != "ok":
                        _raise_worker_error(job, status, payload, proc.exitcode)
                    results.append(payload)
                    bar.update()
    finally:
        for proc, _ in running.values():
            proc.terminate()
            proc.join()
    results.sort(key=lambda r: r.index)
    return results


def _raise_worker_error(job: ChapterJob, status: str, payload: Any, exitcode: int | None) -> None:
    where = f"chapter {job.chapter_id} of speaker {job.speaker.id} ({job.speaker.voice})"
    if status == "died":
        raise RuntimeError(
            f"{where}: the worker process died (exit code {exitcode}). If you call "
            "build_mini_librispeech from a script, guard the call with "
            "if __name__ == '__main__': (workers re-import the main module)"
        )
    exc, tb = payload
    if isinstance(exc, (OSError, ValueError)):
        raise exc
    raise RuntimeError(f"{where} failed:\n{tb}")


def _write_metadata(
    root: Path,
    jobs: list[ChapterJob],
    results: list[ChapterResult],
    spks: list[SpeakerSpec],
    rng_split: np.random.Generator,
    lib_path: str,
) -> dict[str, Any]:
    labels: dict[str, np.ndarray] = {}
    samples: dict[str, int] = {}
    utts_by_speaker: dict[int, list[str]] = {s.id: [] for s in spks}
    minutes_by_speaker: Counter[int] = Counter()
    chapter_rows = []
    unmapped: Counter[str] = Counter()
    rejected = lexicon_words = rules_words = 0
    for job, res in zip(jobs, results):
        assert job.index == res.index
        rejected += res.rejected
        lexicon_words += res.lexicon_words
        rules_words += res.rules_words
        unmapped.update(res.unmapped)
        chap_samples = 0
        for u in res.utterances:
            labels[u.utt_id] = np.frombuffer(u.labels, dtype=np.uint8)
            samples[u.utt_id] = u.num_samples
            utts_by_speaker[job.speaker.id].append(u.utt_id)
            chap_samples += u.num_samples
        minutes_by_speaker[job.speaker.id] += chap_samples / SAMPLE_RATE / 60
        row = {
            "id": job.chapter_id,
            "speaker": job.speaker.id,
            "book": job.book,
            "book_chapter": job.book_chapter,
            "minutes": round(chap_samples / SAMPLE_RATE / 60, 3),
            "utterances": len(res.utterances),
            "channel": asdict(job.channel) if job.channel is not None else None,
        }
        chapter_rows.append(row)
    if unmapped:
        log.warning("espeak phonemes without an ARPAbet mapping (labelled SPN): %s", dict(unmapped))

    # every label file must match the audio that was written
    subset = root / "LibriSpeech" / SUBSET
    for utt_id, lab in labels.items():
        spk, chap, _ = utt_id.split("-")
        path = subset / spk / chap / f"{utt_id}.flac"
        info = sf.info(str(path))
        expect = compute_num_frames(info.frames / info.samplerate, FRAME_SHIFT, SAMPLE_RATE)
        if info.samplerate != SAMPLE_RATE or len(lab) != expect:
            raise MiniLibriSpeechError(
                f"utterance {utt_id}: {len(lab)} label frames but audio {path} has {expect} "
                f"frames ({info.frames / info.samplerate:.2f} s at {info.samplerate} Hz)"
            )

    lab_dir = root / "labels"
    lab_dir.mkdir()
    with open(lab_dir / "converted_aligned_phones.txt", "w") as f:
        for utt_id in sorted(labels):
            f.write(utt_id + " " + " ".join(map(str, labels[utt_id].tolist())) + "\n")
    train, test = _split(utts_by_speaker, rng_split)
    (lab_dir / "train_split.txt").write_text("".join(u + "\n" for u in train))
    (lab_dir / "test_split.txt").write_text("".join(u + "\n" for u in test))
    (lab_dir / "phones.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(PHONE_SYMBOLS)))

    ls = root / "LibriSpeech"
    (ls / "SPEAKERS.TXT").write_text(_speakers_txt(spks, minutes_by_speaker))
    (ls / "CHAPTERS.TXT").write_text(_chapters_txt(chapter_rows))

    def counts(ids: list[str]) -> Counter[str]:
        c = np.zeros(len(PHONE_SYMBOLS), dtype=np.int64)
        for u in ids:
            c += np.bincount(labels[u], minlength=len(PHONE_SYMBOLS))
        return Counter({p: int(v) for p, v in zip(PHONE_SYMBOLS, c)})

    all_counts, test_counts = counts(sorted(labels)), counts(test)
    maj, maj_n = all_counts.most_common(1)[0]
    test_total = sum(test_counts.values())
    spk_test_frames = Counter()
    for u in test:
        spk_test_frames[u.split("-")[0]] += len(labels[u])
    total_samples = sum(samples.values())
    return {
        "num_speakers": len(spks),
        "num_chapters": len(jobs),
        "num_utterances": len(labels),
        "num_train_utterances": len(train),
        "num_test_utterances": len(test),
        "rejected_sentences": rejected,
        "total_minutes": round(total_samples / SAMPLE_RATE / 60, 3),
        "total_frames": int(sum(len(v) for v in labels.values())),
        "sample_rate": SAMPLE_RATE,
        "frame_shift": FRAME_SHIFT,
        "espeak_library": lib_path,
        "phones": list(PHONE_SYMBOLS),
        "label_class_counts": {p: int(all_counts.get(p, 0)) for p in PHONE_SYMBOLS},
        "unmapped_espeak_phonemes": dict(unmapped),
        "words_spoken_from_lexicon": lexicon_words,
        "words_spoken_by_espeak_rules": rules_words,
        "chance": {
            "phone_majority_class": maj,
            "phone_majority_frame_accuracy": round(maj_n / max(sum(all_counts.values()), 1), 4),
            "phone_majority_frame_accuracy_test": round(
                test_counts.get(maj, 0) / max(test_total, 1), 4
            ),
            "speaker_uniform": round(1.0 / len(spks), 4),
            "speaker_majority_frame_accuracy_test": round(
                max(spk_test_frames.values(), default=0) / max(test_total, 1), 4
            ),
        },
        "speakers": [
            {
                "id": s.id,
                "sex": s.sex,
                "voice": s.voice,
                "voice_file": f"voices/{s.variant}",
                "voice_params": s.voice_spec.to_json(),
                "pitch_range": s.pitch_range,
                "rate": s.rate,
                "jitter": {"pitch": PITCH_JITTER, "pitch_range": RANGE_JITTER, "rate": RATE_JITTER},
                "minutes": round(minutes_by_speaker[s.id], 3),
                "utterances": len(utts_by_speaker[s.id]),
            }
            for s in spks
        ],
        "chapters": chapter_rows,
    }
