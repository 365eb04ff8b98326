"""cpc.audio.mini_librispeech + egs/librispeech100/local/make_mini_librispeech.py on tiny
corpora (3 speakers, about 40 s of audio): layout, label/audio agreement, alignment, splits,
channels, determinism.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse.utils import compute_num_frames

from cpc.audio import espeak as E
from cpc.audio import mini_librispeech as M
from cpc.audio.constants import ARPABET
from cpc.audio.lexicon import Lexicon, cmudict_pronunciations
from cpc.audio.text import find_janeaustenr
from tests.needs import require

SEED = 7
TINY = {"speakers": 3, "minutes": 0.6, "seed": SEED, "num_jobs": 2}
ESPEAK = "espeak-ng (libespeak-ng, from the espeakng-loader wheel)"
AUSTEN = "the Jane Austen text (Debian's r-cran-janeaustenr, unpacked into the venv)"


def _missing_inputs() -> list[str]:
    """The corpus builder's inputs that are not installed."""
    missing = []
    try:
        E.find_espeak()
    except FileNotFoundError:
        missing.append(ESPEAK)
    try:
        find_janeaustenr()
    except FileNotFoundError:
        missing.append(AUSTEN)
    return missing


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    missing = _missing_inputs()
    require(not missing, " and ".join(missing))
    from egs.librispeech100.local.make_mini_librispeech import main

    root = tmp_path_factory.mktemp("mini")
    out = {name: root / name for name in ("clean", "channel", "channel_again")}
    M.build_mini_librispeech(out["clean"], clean=True, **TINY)
    M.build_mini_librispeech(out["channel"], clean=False, **TINY)
    # the second build goes through the command line, exactly as the recipe calls it
    args = ["--out-dir", str(out["channel_again"]), "--clean", "false"]
    for k in ("speakers", "minutes", "seed", "num_jobs"):
        args += [f"--{k.replace('_', '-')}", str(TINY[k])]
    assert main(args) == 0
    return out


def _labels(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in (root / "labels" / "converted_aligned_phones.txt").read_text().splitlines():
        utt, *ids = line.split()
        out[utt] = np.array(ids, dtype=int)
    return out


def _flac(root: Path, utt: str) -> Path:
    spk, chap, _ = utt.split("-")
    return root / "LibriSpeech" / "train-clean-100" / spk / chap / f"{utt}.flac"


def _frames(root: Path, utt: str, n: int) -> np.ndarray:
    x, _ = sf.read(_flac(root, utt), dtype="float64")
    x = np.pad(x, (0, max(0, n * 160 - len(x))))[: n * 160]
    return x.reshape(n, 160)


# ---- pure functions ----


def test_num_frames_equals_lhotse() -> None:
    # a frame is counted once half of it (80 samples) is there
    edges = [0, 1, 79, 80, 81, 159, 160, 161, 239, 240, 241, 16000, 16079, 16080, 16081]
    assert [M.num_frames(n) for n in edges] == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 100, 100, 101, 101]
    ns = (
        edges
        + list(range(0, 2000, 7))
        + [16000 * k + d for k in (3, 15) for d in range(-200, 200, 13)]
    )
    ns += [160 * k + d for k in (1000, 2400, 100_000) for d in (-81, -80, -79, 0, 79, 80, 81)]
    for n in ns:
        assert M.num_frames(n) == compute_num_frames(n / 16000, 0.01, 16000), n


def test_frame_labels_use_the_phone_at_the_frame_centre() -> None:
    # frame i covers [160 i, 160 i + 160); its centre is 160 i + 80
    spans = [(5, 0, 81), (7, 81, 239), (9, 239, 400)]
    assert M.frame_labels(spans, 400).tolist() == [5, 9, 9]  # centres 80, 240, 400 -> 399
    assert M.frame_labels([(5, 0, 81)], 400).tolist() == [5, 0, 0]
    assert M.frame_labels([(5, 0, 80)], 400).tolist() == [0, 0, 0]
    assert M.frame_labels([(3, 399, 400)], 400).tolist() == [0, 0, 3]  # centre 400 -> 399
    assert len(M.frame_labels([], 16000 * 2 + 79)) == 200


def test_espeak_phoneme_mapping() -> None:
    assert M.espeak_to_arpabet("'aI") == ("AY",)
    assert M.espeak_to_arpabet(",e@") == ("EH", "R")
    assert M.espeak_to_arpabet("_:") == ("SIL",)
    assert M.espeak_to_arpabet("@L") == ("AH", "L")
    assert M.espeak_to_arpabet("qq") == ("SPN",)
    targets = {p for v in M.ESPEAK_TO_ARPABET.values() for p in v}
    assert targets <= set(M.PHONE_SYMBOLS)
    assert set(ARPABET) <= targets  # every phone class is reachable
    assert len(M.PHONE_SYMBOLS) == 41 and M.PHONE_SYMBOLS[0] == "SIL"


def test_lexicon_pronunciations_as_espeak_phoneme_input() -> None:
    assert set(M.ARPABET_TO_ESPEAK) == set(ARPABET)
    for table in (M.ARPABET_TO_ESPEAK, M.ARPABET_TO_ESPEAK_UNSTRESSED):
        for phone, mnemonic in table.items():  # the labels spell the lexicon's phone back
            assert M.espeak_to_arpabet(mnemonic) == (phone,), phone
            assert M.espeak_to_arpabet("'" + mnemonic) == (phone,), phone
    assert M.espeak_phoneme_input(("HH", "AH0", "L", "OW1")) == "[[h|@|l|'oU]]"
    assert M.espeak_phoneme_input(("K", "AA2", "R", "T", "SH", "IH0", "P")) == (
        "[[k|,A:|r|t|S|I|p]]"  # '|' keeps t + S from being read as tS (CH)
    )
    lex = Lexicon({"IT": ("IH1", "T"), "IS": ("IH1", "Z"), "ANNE": ("AE1", "N")})
    assert M.lexicon_text("It is Zzyzx, it! Anne's.", lex) == (
        "[['I|t]] [['I|z]] Zzyzx, [['I|t]]! [['a|n|z]].",
        4,
        1,
    )


def test_phoneme_input_is_spoken_as_the_lexicon_says() -> None:
    require(not _missing_inputs(), ESPEAK)
    lex = Lexicon(cmudict_pronunciations(stress=True))
    text = "Mother carried a very little story."
    spoken, n_lex, n_rules = M.lexicon_text(text, lex)
    assert (n_lex, n_rules) == (6, 0)
    tts = E.get_espeak()
    tts.set_voice("en-us")
    events = tts.synthesize(spoken, seed=1, phonemes=True).events
    got = [p for e in events for p in M.espeak_to_arpabet(e.phoneme) if p != "SIL"]
    assert got == [p for w in Lexicon().transcript(text) for p in (M.PHONE_SYMBOLS[i] for i in w)]
    by_rules = tts.synthesize(text, seed=1).events  # espeak's own rules say it otherwise
    assert [p for e in by_rules for p in M.espeak_to_arpabet(e.phoneme) if p != "SIL"] != got


def test_bad_options_and_unwritable_out_dir(tmp_path: Path) -> None:
    with pytest.raises(M.MiniLibriSpeechError, match="--speakers"):
        M.build_mini_librispeech(tmp_path / "x", speakers=0)
    with pytest.raises(M.MiniLibriSpeechError, match="--minutes"):
        M.build_mini_librispeech(tmp_path / "x", minutes=-1)
    with pytest.raises(M.MiniLibriSpeechError, match="pronunciations 'ipa': choose one of"):
        M.build_mini_librispeech(tmp_path / "x", pronunciations="ipa")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(M.MiniLibriSpeechError, match="writable --out-dir"):
        M.build_mini_librispeech(blocker / "corpus", speakers=2, minutes=0.5)


def test_cli_reports_errors_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from egs.librispeech100.local.make_mini_librispeech import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--out-dir", str(blocker / "c"), "--speakers", "2", "--minutes", "0.5"]) == 1
    assert "writable --out-dir" in capsys.readouterr().err

    def no_espeak() -> None:
        raise E.EspeakNotFoundError("espeak-ng is not available: install espeakng-loader")

    monkeypatch.setattr(M, "find_espeak", no_espeak)
    assert main(["--out-dir", str(tmp_path / "c"), "--clean", "true"]) == 1
    assert "espeakng-loader" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_missing_text_error(tmp_path: Path) -> None:
    require(ESPEAK not in _missing_inputs(), ESPEAK)
    with pytest.raises(FileNotFoundError, match="r-cran-janeaustenr"):
        M.build_mini_librispeech(tmp_path / "c", speakers=2, minutes=0.5, text_root=tmp_path)
    assert not (tmp_path / "c").exists()


# ---- built corpora ----


def test_layout_and_formats(corpora: dict[str, Path]) -> None:
    root = corpora["channel"]
    assert sorted(p.name for p in root.iterdir()) == [
        "LibriSpeech",
        "info.json",
        "labels",
        "voices",
    ]
    assert not list(root.parent.glob(".channel*"))  # no temporary directory left over
    subset = root / "LibriSpeech" / "train-clean-100"
    flacs = sorted(subset.glob("*/*/*.flac"))
    assert flacs
    for f in flacs:
        assert re.fullmatch(r"\d{4}-\d+-\d{4}\.flac", f.name)
        spk, chap, _ = f.stem.split("-")
        assert f.parent.name == chap and f.parent.parent.name == spk
        info = sf.info(str(f))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (
            16000,
            1,
            "FLAC",
            "PCM_16",
        )
        assert M.MIN_SECONDS <= info.frames / info.samplerate <= M.MAX_SECONDS
    trans = {}
    for t in subset.glob("*/*/*.trans.txt"):
        spk, chap = t.parent.parent.name, t.parent.name
        assert t.name == f"{spk}-{chap}.trans.txt"
        for line in t.read_text().splitlines():
            utt, text = line.split(" ", 1)
            assert utt.startswith(f"{spk}-{chap}-")
            assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", text)
            trans[utt] = text
    assert sorted(trans) == sorted(f.stem for f in flacs)
    # every chapter starts at utterance 0000
    for chap_dir in subset.glob("*/*"):
        assert (chap_dir / f"{chap_dir.parent.name}-{chap_dir.name}-0000.flac").exists()

    rows = [
        [c.strip() for c in line.split("|")]
        for line in (root / "LibriSpeech" / "SPEAKERS.TXT").read_text().splitlines()
        if not line.startswith(";")
    ]
    assert sorted(r[0] for r in rows) == sorted(p.name for p in subset.iterdir())
    for spk_id, sex, sub, minutes, name in rows:
        assert sex in ("M", "F") and sub == "train-clean-100" and float(minutes) > 0 and name
        assert len(list((subset / spk_id).iterdir())) >= 2  # at least 2 chapters
    assert sorted(r[1] for r in rows) == ["F", "F", "M"]  # balanced, odd one female
    chapters = [
        [c.strip() for c in line.split("|")]
        for line in (root / "LibriSpeech" / "CHAPTERS.TXT").read_text().splitlines()
        if not line.startswith(";")
    ]
    assert sorted(c[0] for c in chapters) == sorted(p.name for p in subset.glob("*/*"))


def test_label_frames_match_audio(corpora: dict[str, Path]) -> None:
    root = corpora["channel"]
    labels = _labels(root)
    flacs = sorted(p.stem for p in root.glob("LibriSpeech/train-clean-100/*/*/*.flac"))
    assert sorted(labels) == flacs
    for utt, lab in labels.items():
        info = sf.info(str(_flac(root, utt)))
        assert len(lab) == compute_num_frames(info.frames / info.samplerate, 0.01, 16000), utt
        assert lab.min() >= 0 and lab.max() <= 40
        assert lab[0] == M.SIL_ID and lab[-1] == M.SIL_ID  # padded with silence
    phones = [line.split() for line in (root / "labels" / "phones.txt").read_text().splitlines()]
    assert phones == [[p, str(i)] for i, p in enumerate(M.PHONE_SYMBOLS)]


def test_splits_by_utterance_with_every_speaker_in_both(corpora: dict[str, Path]) -> None:
    root = corpora["channel"]
    train = (root / "labels" / "train_split.txt").read_text().split()
    test = (root / "labels" / "test_split.txt").read_text().split()
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(_labels(root))
    speakers = {u.split("-")[0] for u in train + test}
    assert {u.split("-")[0] for u in train} == speakers == {u.split("-")[0] for u in test}
    assert len(test) <= len(train)


def test_labels_line_up_with_clean_audio(corpora: dict[str, Path]) -> None:
    root = corpora["clean"]
    sym = M.PHONE_SYMBOLS
    rms: dict[str, list[float]] = {}
    zcr: dict[str, list[float]] = {}
    for utt, lab in _labels(root).items():
        fr = _frames(root, utt, len(lab))
        r = np.sqrt(np.mean(fr**2, axis=1))
        z = np.mean(np.abs(np.diff(np.sign(fr), axis=1)) > 0, axis=1)
        for i, c in enumerate(lab):
            rms.setdefault(sym[c], []).append(r[i])
            zcr.setdefault(sym[c], []).append(z[i])

    def pool(d: dict[str, list[float]], classes: list[str]) -> float:
        return float(np.mean([v for c in classes if c in d for v in d[c]]))

    vowels = ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "UW"]
    phones = [p for p in rms if p not in ("SIL", "SPN")]
    assert pool(rms, ["SIL"]) < 0.1 * pool(rms, phones)
    assert pool(zcr, ["S", "SH", "Z", "CH"]) > 2.0 * pool(zcr, vowels)


def test_channel_differs_from_clean(corpora: dict[str, Path]) -> None:
    clean, chan = corpora["clean"], corpora["channel"]
    # the same seed gives the same utterances and labels; only the recording differs
    labels = (clean / "labels" / "converted_aligned_phones.txt").read_bytes()
    assert labels == (chan / "labels" / "converted_aligned_phones.txt").read_bytes()
    sil_clean, sil_chan, speech_chan = [], [], []
    for utt, lab in _labels(clean).items():
        fc, fn = _frames(clean, utt, len(lab)), _frames(chan, utt, len(lab))
        # leading silence, without the frame just before speech (it overlaps the first phone)
        lead = np.arange(len(lab)) < np.argmax(lab != M.SIL_ID) - 1
        sil_clean.append(np.sqrt(np.mean(fc[lead] ** 2)))
        sil_chan.append(np.sqrt(np.mean(fn[lead] ** 2)))
        speech_chan.append(np.sqrt(np.mean(fn[lab != M.SIL_ID] ** 2)))
        assert not np.allclose(fc, fn)
    assert max(sil_clean) < 1e-4  # digital silence (PCM_16 rounding)
    assert min(sil_chan) > 1e-4  # a measurable noise floor
    snr = 20 * np.log10(np.array(speech_chan) / np.array(sil_chan))
    assert np.all((snr > 12) & (snr < 50)), snr  # 20-40 dB drawn, plus filtering and gain


def test_same_seed_same_corpus(corpora: dict[str, Path]) -> None:
    a, b = corpora["channel"], corpora["channel_again"]
    for name in ("converted_aligned_phones.txt", "train_split.txt", "test_split.txt"):
        assert (a / "labels" / name).read_bytes() == (b / "labels" / name).read_bytes()
    for utt in _labels(a):
        xa, _ = sf.read(_flac(a, utt), dtype="int16")
        xb, _ = sf.read(_flac(b, utt), dtype="int16")
        assert np.array_equal(xa, xb), utt
    ia, ib = (json.loads((d / "info.json").read_text()) for d in (a, b))
    for key in ("build_seconds", "build_cpu_seconds"):
        ia.pop(key)
        ib.pop(key)
    assert ia == ib


def test_info_json(corpora: dict[str, Path]) -> None:
    info = json.loads((corpora["channel"] / "info.json").read_text())
    assert info["options"] == {**TINY, "clean": False, "pronunciations": "cmudict"}
    words = sum(
        len(line.split()) - 1
        for t in (corpora["channel"] / "LibriSpeech").glob("*/*/*/*.trans.txt")
        for line in t.read_text().splitlines()
    )
    assert info["words_spoken_from_lexicon"] + info["words_spoken_by_espeak_rules"] == words
    assert info["words_spoken_from_lexicon"] > 0.9 * words
    assert info["num_speakers"] == 3
    assert info["num_chapters"] == len(info["chapters"]) == 6
    assert info["num_utterances"] == len(_labels(corpora["channel"]))
    assert 0.4 < info["total_minutes"] < 1.2
    assert sum(info["label_class_counts"].values()) == info["total_frames"]
    chance = info["chance"]
    assert chance["speaker_uniform"] == pytest.approx(1 / 3, abs=1e-3)
    assert 0 < chance["phone_majority_frame_accuracy"] < 0.5
    for s in info["speakers"]:
        assert s["voice"].startswith("en-us+") and s["utterances"] >= 2
        assert M.RATE_RANGE[0] <= s["rate"] <= M.RATE_RANGE[1]
        assert s["voice"] == f"en-us+spk{s['id']}" and s["voice_file"] == f"voices/spk{s['id']}"
    for c in info["chapters"]:
        ch = c["channel"]
        assert 60 <= ch["highpass_hz"] <= 300 and 3500 <= ch["lowpass_hz"] <= 7500
        assert 20 <= ch["noise_snr_db"] <= 40
    clean_info = json.loads((corpora["clean"] / "info.json").read_text())
    assert all(c["channel"] is None for c in clean_info["chapters"])


def test_speakers_have_their_own_voice_in_every_chapter(corpora: dict[str, Path]) -> None:
    out = corpora["channel"]
    info = json.loads((out / "info.json").read_text())
    files = {p.name: p.read_text() for p in sorted((out / "voices").iterdir())}
    speakers = {s["id"]: s for s in info["speakers"]}
    assert sorted(files) == sorted(f"spk{i}" for i in speakers)
    assert len(set(files.values())) == len(speakers)  # every speaker's voice file differs
    assert not (out / ".espeak-ng-data").exists()  # the linked data directory is not kept
    for sid, s in speakers.items():
        text = files[f"spk{sid}"]
        p = s["voice_params"]
        assert f"pitch {p['pitch_hz']} {p['pitch_top_hz']}" in text
        assert f"formant 1 {p['formant_freq'][1]} " in text
    # the voices do not depend on the channels: the clean build has the same files
    clean = {p.name: p.read_text() for p in (corpora["clean"] / "voices").iterdir()}
    assert clean == files
    # each speaker reads >= 2 chapters, all with their own voice (SPEAKERS.TXT lists it)
    per_speaker = Counter(c["speaker"] for c in info["chapters"])
    assert set(per_speaker) == set(speakers) and min(per_speaker.values()) >= 2
    listing = (out / "LibriSpeech" / "SPEAKERS.TXT").read_text()
    for sid, s in speakers.items():
        assert f"en-us+spk{sid} f0 {s['voice_params']['pitch_hz']} Hz" in listing
    assert info["build_cpu_seconds"]["workers"] > 0
