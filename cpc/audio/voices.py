"""Per-speaker voices for the embedded mini-LibriSpeech: espeak-ng voice variant files.

Real speakers differ by their voice, not only by the room and microphone they were recorded
with. Every synthetic reader gets an espeak-ng voice variant of their own, drawn from the
distributions below (one draw per speaker, from the corpus seed), written as a variant file
(``voices/!v/<name>``, espeak-ng's voice file syntax, see espeak-ng's docs/voices.md) into an
espeak-ng data directory that the C API is initialised with (``make_data_dir``: the stock data
linked, plus the speakers' files).

Per speaker (sex-dependent where real voices are):

- vocal-tract length: every formant frequency scaled by one factor ``vtl_scale``, normal with
  mean 1.00 (male) / 1.15 (female) and sd 0.045, truncated to +-2.5 sd. Adult vocal tracts
  are about 17 cm (men) and 14.5 cm (women) with a spread of about 5 %, and formant
  frequencies scale with the inverse length (female/male about 1.15);
- individual articulation: formants F1-F3 moved by a further factor each, normal with mean 1
  and sd 0.03 (truncated to +-2.5 sd);
- formant bandwidths (damping): one factor for all formants, normal 100 % sd 15 %, in 70-150 %;
  formant strengths: normal 100 % sd 10 % per formant, in 75-125 %;
- spectral tilt of the voice source: ``tone`` curve falling from 500 Hz at ``tilt_db_oct`` dB
  per octave (to 1, 2 and 4 kHz), normal mean -3, sd 2, in -8..+1 (0 = flat, the lower the
  duller);
- breathiness: aspiration noise at the formants (``breath`` on formants 1-8), level uniform in
  0-24 (espeak-ng's female voices use 2-3; a whisper 75);
- roughness (alternate glottal cycles weakened, creak): integer uniform 0-5;
- flutter (slow pitch wavering): integer uniform 1-12 (espeak-ng's default 2; 20 is croaky);
- habitual pitch: the base frequency in Hz, normal mean 100 (male) / 185 (female), sd 14 / 22,
  truncated to +-2.5 sd, and the top of the range at 1.35-1.65 x the base (uniform);
- habitual rate, words per minute, and intonation range (espeak's 0-100 scale) are given by
  the caller through the API (``espeak_SetParameter``), with per-utterance jitter.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpc.io import Pathlike

#: espeak-ng voice variants live in voices/!v/ of the data directory.
VARIANT_DIR = ("voices", "!v")
NUM_FORMANTS = 9  # formant 0 (below F1) .. formant 8

VTL_MEAN = {"M": 1.00, "F": 1.15}
VTL_SD = 0.06
ARTIC_SD = 0.05
WIDTH_SD, WIDTH_RANGE = 15.0, (70, 150)
HEIGHT_SD, HEIGHT_RANGE = 10.0, (75, 125)
TILT_MEAN, TILT_SD, TILT_RANGE = -3.0, 3.0, (-10.0, 3.0)
BREATH_RANGE = (0, 40)
ROUGHNESS_RANGE = (0, 5)
FLUTTER_RANGE = (1, 12)
PITCH_MEAN = {"M": 100.0, "F": 185.0}
PITCH_SD = {"M": 20.0, "F": 28.0}
PITCH_TOP_RANGE = (1.35, 1.65)
TONE_BASE_HZ, TONE_BASE_AMP = 500, 200
TONE_POINTS_HZ = (1000, 2000, 4000)


@dataclass(frozen=True)
class VoiceSpec:
    """One speaker's voice: what the variant file says (see the module docstring)."""

    vtl_scale: float
    formant_freq: tuple[int, ...]  # % of espeak's default, formants 0..8
    formant_height: tuple[int, ...]
    formant_width: tuple[int, ...]
    tilt_db_oct: float
    breath: int
    roughness: int
    flutter: int
    pitch_hz: int
    pitch_top_hz: int

    def tone(self) -> list[tuple[int, int]]:
        """The ``tone`` curve: (Hz, amplitude 0-255) points falling at ``tilt_db_oct``."""
        pts = [(TONE_BASE_HZ, TONE_BASE_AMP)]
        for hz in TONE_POINTS_HZ:
            octaves = np.log2(hz / TONE_BASE_HZ)
            amp = TONE_BASE_AMP * 10 ** (self.tilt_db_oct * octaves / 20)
            pts.append((hz, int(np.clip(round(amp), 1, 255))))
        return pts

    def variant_file(self, name: str, sex: str) -> str:
        """The espeak-ng variant file (``voices/!v/<name>``) of this voice."""
        lines = [
            "language variant",
            f"name {name}",
            f"gender {'female' if sex == 'F' else 'male'}",
            f"pitch {self.pitch_hz} {self.pitch_top_hz}",
        ]
        for i in range(NUM_FORMANTS):
            lines.append(
                f"formant {i} {self.formant_freq[i]} {self.formant_height[i]} "
                f"{self.formant_width[i]}"
            )
        lines.append("tone " + " ".join(f"{hz} {amp}" for hz, amp in self.tone()))
        lines.append("breath 0 " + " ".join([str(self.breath)] * 7))
        lines.append(f"roughness {self.roughness}")
        lines.append(f"flutter {self.flutter}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tone"] = self.tone()
        return d


def _truncnorm(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """One draw of a normal truncated to [lo, hi] (by rejection; the bounds are >= 2 sd)."""
    while True:
        x = float(rng.normal(mean, sd))
        if lo <= x <= hi:
            return x


def design_voice(sex: str, rng: np.random.Generator) -> VoiceSpec:
    """Draw one speaker's voice (``sex`` "M" or "F") from the module's distributions."""
    if sex not in VTL_MEAN:
        raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")
    m = VTL_MEAN[sex]
    vtl = _truncnorm(rng, m, VTL_SD, m - 2.5 * VTL_SD, m + 2.5 * VTL_SD)
    artic = [1.0] + [
        _truncnorm(rng, 1.0, ARTIC_SD, 1 - 2.5 * ARTIC_SD, 1 + 2.5 * ARTIC_SD) for _ in range(3)
    ]
    artic += [1.0] * (NUM_FORMANTS - len(artic))
    width = _truncnorm(rng, 100.0, WIDTH_SD, *WIDTH_RANGE)
    heights = [_truncnorm(rng, 100.0, HEIGHT_SD, *HEIGHT_RANGE) for _ in range(NUM_FORMANTS)]
    tilt = _truncnorm(rng, TILT_MEAN, TILT_SD, *TILT_RANGE)
    breath = int(rng.integers(BREATH_RANGE[0], BREATH_RANGE[1] + 1))
    roughness = int(rng.integers(ROUGHNESS_RANGE[0], ROUGHNESS_RANGE[1] + 1))
    flutter = int(rng.integers(FLUTTER_RANGE[0], FLUTTER_RANGE[1] + 1))
    pm, ps = PITCH_MEAN[sex], PITCH_SD[sex]
    pitch = _truncnorm(rng, pm, ps, pm - 2.5 * ps, pm + 2.5 * ps)
    top = pitch * float(rng.uniform(*PITCH_TOP_RANGE))
    return VoiceSpec(
        vtl_scale=round(vtl, 4),
        formant_freq=tuple(int(round(100 * vtl * a)) for a in artic),
        formant_height=tuple(int(round(h)) for h in heights),
        formant_width=tuple([int(round(width))] * NUM_FORMANTS),
        tilt_db_oct=round(tilt, 2),
        breath=breath,
        roughness=roughness,
        flutter=flutter,
        pitch_hz=int(round(pitch)),
        pitch_top_hz=int(round(top)),
    )


def make_data_dir(stock: Pathlike, dest: Pathlike, variants: dict[str, str]) -> Path:
    """An espeak-ng data directory at ``dest``: every entry of the ``stock`` data directory
    linked (symbolic links, nothing copied), plus the variant files ``variants`` (name ->
    file text) written into ``voices/!v/``. Returns ``dest``; initialise espeak-ng with it and
    select a voice with ``"en-us+<name>"``."""
    stock, dest = Path(stock).absolute(), Path(dest)
    dest.mkdir(parents=True)

    def link_all(src: Path, dst: Path, skip: str | None) -> None:
        for entry in sorted(os.listdir(src)):
            if entry != skip:
                (dst / entry).symlink_to(src / entry)

    link_all(stock, dest, skip=VARIANT_DIR[0])
    (dest / VARIANT_DIR[0]).mkdir()
    link_all(stock / VARIANT_DIR[0], dest / VARIANT_DIR[0], skip=VARIANT_DIR[1])
    vdir = dest.joinpath(*VARIANT_DIR)
    vdir.mkdir()
    if (stock.joinpath(*VARIANT_DIR)).is_dir():
        link_all(stock.joinpath(*VARIANT_DIR), vdir, skip=None)
    for name, text in variants.items():
        path = vdir / name
        if path.is_symlink():
            path.unlink()  # a speaker's voice replaces a stock variant of the same name
        path.write_text(text)
    return dest
