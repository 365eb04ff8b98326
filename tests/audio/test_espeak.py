"""cpc.audio.espeak: the ctypes binding of libespeak-ng and its phoneme events."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from cpc.audio import espeak as E
from cpc.audio.mini_librispeech import espeak_to_arpabet
from tests.needs import require

ESPEAK = "espeak-ng (libespeak-ng, from the espeakng-loader wheel)"


def _available() -> bool:
    try:
        E.find_espeak()
        return True
    except E.EspeakNotFoundError:
        return False


def test_event_struct_matches_speak_lib_h() -> None:
    # speak_lib.h: 6 x int, void* user_data, union { int; const char*; char[8] } id
    ptr = ctypes.sizeof(ctypes.c_void_p)
    assert E._Event.sample.offset == 20
    assert E._Event.user_data.offset == 24
    assert E._Event.id.offset == 24 + ptr
    assert ctypes.sizeof(E._EventId) == 8
    assert ctypes.sizeof(E._Event) == 24 + ptr + 8


def test_missing_library_names_both_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails
    monkeypatch.setattr(E, "DEBIAN_LIBRARY", "/nonexistent/libespeak-ng.so.1")
    with pytest.raises(E.EspeakNotFoundError) as e:
        E.find_espeak()
    assert "espeakng-loader" in str(e.value)
    assert "libespeak-ng1" in str(e.value)


def test_segments_tile_and_drop_zero_length() -> None:
    syn = E.Synthesis(
        np.zeros(100, dtype=np.int16),
        22050,
        [E.PhonemeEvent("h", 0), E.PhonemeEvent("_", 10), E.PhonemeEvent("@", 10)],
    )
    assert syn.segments() == [E.PhoneSegment("h", 0, 10), E.PhoneSegment("@", 10, 100)]


def test_synthesis_returns_audio_and_phoneme_events() -> None:
    require(_available(), ESPEAK)
    tts = E.get_espeak()
    assert tts.sample_rate == E.ESPEAK_SAMPLE_RATE
    tts.set_voice("en-us+m3")
    tts.set_parameters(rate=170, pitch=50, pitch_range=50)
    out = tts.synthesize("She sells sea shells by the sea shore.", seed=1)
    assert out.samples.dtype == np.int16
    assert 1.0 < len(out.samples) / out.sample_rate < 5.0
    segs = out.segments()
    assert len(segs) > 15
    assert segs[-1].end == len(out.samples)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:]))
    phones = [p for s in segs for p in espeak_to_arpabet(s.phoneme)]
    assert "SPN" not in phones
    assert phones.count("S") + phones.count("SH") >= 6  # she sells sea shells ... shore
    # fricatives are noisy: many more zero crossings than in vowels
    x = out.samples.astype(float)

    def zcr(label_set: set[str]) -> float:
        rates = []
        for s in segs:
            if espeak_to_arpabet(s.phoneme)[0] in label_set and s.end - s.start > 200:
                seg = x[s.start : s.end]
                rates.append(np.mean(np.abs(np.diff(np.sign(seg))) > 0))
        return float(np.mean(rates))

    assert zcr({"S", "SH"}) > 2.5 * zcr({"IY", "EH", "AO", "AY"})


def test_rate_changes_duration_and_unknown_variant_is_refused() -> None:
    require(_available(), ESPEAK)
    tts = E.get_espeak()
    tts.set_voice("en-us+f2")
    text = "It is a truth universally acknowledged."
    tts.set_parameters(rate=120)
    slow = len(tts.synthesize(text, seed=1).samples)
    tts.set_parameters(rate=240)
    fast = len(tts.synthesize(text, seed=1).samples)
    assert fast < 0.7 * slow
    with pytest.raises(E.EspeakError, match="variant"):
        tts.set_voice("en-us+nosuchvariant")
    with pytest.raises(ValueError, match="outside"):
        tts.set_parameters(pitch=150)
