"""cpc.audio.voices and the speakers of the embedded mini-LibriSpeech: every speaker has a voice
of their own (an espeak-ng variant file), drawn from documented distributions, loaded by the
C API from the data directory the builder writes, the same in every chapter of that speaker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpc.audio import voices as V
from cpc.audio.espeak import find_espeak, stock_data_path
from tests.needs import require


def _espeak() -> None:
    try:
        find_espeak()
        stock_data_path()
    except FileNotFoundError as e:
        require(False, f"espeak-ng ({e})")


def test_design_is_seeded_sex_dependent_and_bounded() -> None:
    a = [V.design_voice("M", np.random.default_rng(s)) for s in range(200)]
    b = [V.design_voice("M", np.random.default_rng(s)) for s in range(200)]
    assert a == b  # deterministic for the seed
    f = [V.design_voice("F", np.random.default_rng(s)) for s in range(200)]
    assert len({v.variant_file("x", "M") for v in a}) == 200  # all different
    vtl_m, vtl_f = np.array([v.vtl_scale for v in a]), np.array([v.vtl_scale for v in f])
    assert abs(vtl_m.mean() - 1.0) < 0.02 and abs(vtl_f.mean() - 1.15) < 0.02
    lo, hi = 1 - 2.5 * V.VTL_SD, 1 + 2.5 * V.VTL_SD
    assert lo <= vtl_m.min() and vtl_m.max() <= hi
    f0_m, f0_f = np.array([v.pitch_hz for v in a]), np.array([v.pitch_hz for v in f])
    assert f0_m.mean() < 115 < 165 < f0_f.mean()
    for v in a + f:
        assert V.TILT_RANGE[0] <= v.tilt_db_oct <= V.TILT_RANGE[1]
        assert V.BREATH_RANGE[0] <= v.breath <= V.BREATH_RANGE[1]
        assert V.ROUGHNESS_RANGE[0] <= v.roughness <= V.ROUGHNESS_RANGE[1]
        assert V.FLUTTER_RANGE[0] <= v.flutter <= V.FLUTTER_RANGE[1]
        assert v.pitch_hz < v.pitch_top_hz
        # formant frequencies: the vocal-tract factor (x articulation on F1-F3)
        assert v.formant_freq[0] == v.formant_freq[5]
        assert abs(v.formant_freq[0] - 100 * v.vtl_scale) <= 0.51
    with pytest.raises(ValueError, match="sex"):
        V.design_voice("X", np.random.default_rng(0))


def test_variant_file_syntax() -> None:
    v = V.VoiceSpec(
        vtl_scale=1.1,
        formant_freq=(110,) * 9,
        formant_height=(100,) * 9,
        formant_width=(90,) * 9,
        tilt_db_oct=-6.0,
        breath=12,
        roughness=3,
        flutter=5,
        pitch_hz=180,
        pitch_top_hz=270,
    )
    lines = v.variant_file("spk1", "F").splitlines()
    assert lines[:4] == ["language variant", "name spk1", "gender female", "pitch 180 270"]
    assert lines[4:13] == [f"formant {i} 110 100 90" for i in range(9)]
    # -6 dB per octave from 200 at 500 Hz: 1 kHz 100, 2 kHz 50, 4 kHz 25
    assert lines[13] == "tone 500 200 1000 100 2000 50 4000 25"
    assert lines[14:] == ["breath 0 12 12 12 12 12 12 12", "roughness 3", "flutter 5"]


SYNTH = """
import sys, numpy as np
from cpc.audio.espeak import get_espeak
tts = get_espeak(sys.argv[1])
tts.set_parameters(rate=170, pitch=50, pitch_range=50)
for name in sys.argv[2:]:
    tts.set_voice("en-us+" + name)
    x = tts.synthesize("The weather was fine and we walked along the river.", seed=1).samples
    x = x.astype(float)
    n = len(x) // 1024 * 1024
    p = np.abs(np.fft.rfft(x[:n].reshape(-1, 1024) * np.hanning(1024), axis=1)) ** 2
    f = np.fft.rfftfreq(1024, 1 / 22050)
    loud = p.sum(1) > np.median(p.sum(1))
    print(name, len(x), int(np.abs(x).sum()), (p[loud] * f).sum() / p[loud].sum())
"""


def _synth(data: Path, *names: str) -> dict[str, tuple[int, int, float]]:
    out = subprocess.run(
        [sys.executable, "-c", SYNTH, str(data), *names], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    return {r[0]: (int(r[1]), int(r[2]), float(r[3])) for r in rows}


def test_variant_files_are_loaded_and_change_the_voice(tmp_path: Path) -> None:
    _espeak()
    base = dict(
        formant_height=(100,) * 9,
        formant_width=(100,) * 9,
        tilt_db_oct=-2.0,
        breath=0,
        roughness=2,
        flutter=2,
        pitch_hz=100,
        pitch_top_hz=140,
    )
    specs = {
        f"v{s}": V.VoiceSpec(vtl_scale=s / 100, formant_freq=(s,) * 9, **base)
        for s in (85, 100, 115)
    }
    data = V.make_data_dir(
        stock_data_path(), tmp_path / "data", {k: v.variant_file(k, "M") for k, v in specs.items()}
    )
    assert (data / "voices" / "!v" / "m3").is_symlink()  # stock variants still there
    assert (data / "phontab").is_symlink() and (data / "voices" / "!v" / "v85").is_file()
    first = _synth(data, "v85", "v100", "v115")
    # the voices are files, not process state: a fresh process gives the same audio
    assert _synth(data, "v85", "v100", "v115") == first
    # longer vocal tract (lower formants) -> lower spectral centroid; same text and timing
    c = [first[k][2] for k in ("v85", "v100", "v115")]
    assert c[0] < c[1] < c[2]
    assert len({first[k][1] for k in first}) == 3
