"""Downstream CTC phone recogniser (cpc/audio/asr.py): decoding on known cases, PER, and
training + scoring on a tiny MFCC dump read the icefall way; bad dumps refused by name."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import load_manifest

from cpc.audio.asr import (
    AsrConfig,
    AsrError,
    PhoneRecognizer,
    PronunciationTree,
    WordBigram,
    beam_decode,
    error_rate,
    evaluate,
    greedy_decode,
    load_asr_cuts,
    load_recognizer,
    phone_sequence,
    run_asr,
    word_beam_decode,
    word_error_rate,
)
from cpc.audio.constants import PHONE_TO_ID
from tests.factories import make_labelled_manifests, mfcc_dump


def _logp(rows: list[dict[int, float]]) -> torch.Tensor:
    out = torch.full((len(rows), 41), 1e-9)
    for t, r in enumerate(rows):
        for c, p in r.items():
            out[t, c] = p
    return (out / out.sum(1, keepdim=True)).log()


def test_phone_sequence_and_decoders() -> None:
    assert phone_sequence(np.array([0, 0, 5, 5, 0, 5, 7, 7, 0])) == [5, 5, 7]
    peaky = _logp([{0: 0.9, 5: 0.1}, {5: 0.9, 0: 0.1}, {0: 0.9}, {5: 0.8, 0: 0.2}, {7: 1.0}])
    assert greedy_decode(peaky) == [5, 5, 7] == beam_decode(peaky, beam=4)
    # P("") = 0.6^2 = 0.36 but P("a") = 0.4^2 + 2 * 0.4 * 0.6 = 0.64: greedy says "",
    # the prefix search sums the paths and says "a"
    two = _logp([{0: 0.6, 3: 0.4}, {0: 0.6, 3: 0.4}])
    assert greedy_decode(two) == [] and beam_decode(two, beam=4) == [3]


def test_padded_bilstm_equals_one_by_one() -> None:
    torch.manual_seed(0)
    model = PhoneRecognizer(5, 4, 2, subsample=2).eval()
    x = torch.randn(3, 9, 5)
    lengths = torch.tensor([9, 4, 7])
    batch = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = model(x[i : i + 1, :n], lengths[i : i + 1])
        m = (n + 1) // 2
        torch.testing.assert_close(batch[i, :m], alone[0, :m])


def _peaky(phones: list[int], floor: float = 1e-4) -> torch.Tensor:
    """CTC posteriors that spell ``phones``: each phone for two frames, then a blank."""
    rows = []
    for p in phones:
        rows += [{p: 1.0 - floor}, {p: 1.0 - floor}, {0: 1.0 - floor}]
    return _logp([{**r, **{c: floor / 40 for c in range(41) if c not in r}} for r in rows])


def test_word_decoding_on_known_cases() -> None:
    P = PHONE_TO_ID
    pron = {
        "THE": [P["DH"], P["AH"]],
        "CAT": [P["K"], P["AE"], P["T"]],
        "AT": [P["AE"], P["T"]],
        "SAT": [P["S"], P["AE"], P["T"]],
        "SEW": [P["S"], P["OW"]],
        "SO": [P["S"], P["OW"]],  # a homophone of SEW
        "TT": [P["T"], P["T"]],  # a repeated phone needs a blank between
    }
    tree = PronunciationTree(pron)
    spell = lambda *ws: [p for w in ws for p in pron[w]]  # noqa: E731
    assert word_beam_decode(_peaky(spell("THE", "CAT", "SAT")), tree) == ["THE", "CAT", "SAT"]
    assert word_beam_decode(_peaky(spell("TT", "AT")), tree) == ["TT", "AT"]
    # homophones: the bigram picks the word its transcripts put in that context
    lm = WordBigram([["THE", "CAT", "SO"], ["SEW", "THE", "CAT"]])
    assert word_beam_decode(_peaky(spell("THE", "CAT", "SO")), tree, lm) == ["THE", "CAT", "SO"]
    assert word_beam_decode(_peaky(spell("SO", "THE", "CAT")), tree, lm) == ["SEW", "THE", "CAT"]
    # phones no word spells (ZH NG) are waited out in blank; the words around them survive
    oov = spell("THE") + [P["ZH"], P["NG"]] + spell("CAT")
    assert word_beam_decode(_peaky(oov), tree) == ["THE", "CAT"]
    # a word left incomplete at the end is dropped, the complete ones are kept
    assert word_beam_decode(_peaky(spell("THE") + [P["K"], P["AE"]]), tree) == ["THE"]
    assert word_beam_decode(_peaky([]), tree) == []
    wer = word_error_rate([["A", "B", "C"]], [["A", "C", "D"]])
    assert (wer["wer"], wer["ref_words"], wer["del"], wer["ins"]) == (2 / 3, 3, 1, 1)


def test_word_bigram_is_a_distribution() -> None:
    lm = WordBigram([["A", "B"], ["A", "C"], ["B"]], discount=0.5)
    V = ["A", "B", "C", None]  # None: the sentence end
    unseen = 1 / (lm.total + lm.vocab_size)  # the unigram mass of a word never seen
    for prev in (None, "A", "B", "C", "Z"):
        follow = lm.bigram.get(prev)
        rest = unseen * (0.5 * len(follow) / sum(follow.values()) if follow else 1.0)
        total = sum(math.exp(lm.logp(prev, w)) for w in V) + rest
        assert total == pytest.approx(1.0, abs=1e-12), prev
    # (count - D) / n + D * types / n * (unigram count + 1) / (tokens + types + 1)
    assert math.exp(lm.logp("A", "B")) == pytest.approx(0.5 / 2 + 0.5 * 2 / 2 * 3 / 13)


def test_error_rate_counts() -> None:
    r = error_rate([[1, 2, 3], [4]], [[1, 3, 5], []])
    assert r == {"per": 3 / 4, "ref_phones": 4, "ins": 1, "del": 2, "sub": 0, "total": 3}


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asr")
    manifests, _, _ = make_labelled_manifests(root, speakers=2, chapters=2, utts=3)
    return mfcc_dump(manifests, root / "mfcc")


def test_label_rounding_warning_is_dropped_only_below_one_frame() -> None:
    """lhotse warns for every cut of every batch whose duration differs from its labels'
    frames x 10 ms; under one frame (the labels' rounding) that is dropped, not above."""
    from cpc.audio.asr import _LabelRoundingFilter

    def record(cut: float, frames: int) -> logging.LogRecord:
        msg = (
            f"MonoCut u1: possibly mismatched duration between cut ({cut}s) and temporal "
            f"array in custom field 'phone_labels' (num_frames={frames} * frame_shift=0.01 "
            f"== duration={frames / 100})."
        )
        return logging.LogRecord("root", logging.WARNING, __file__, 1, msg, None, None)

    f = _LabelRoundingFilter()
    assert not f.filter(record(8.0901875, 809))  # 0.2 ms: rounding
    assert f.filter(record(8.5, 809))  # 41 frames apart: kept
    assert f.filter(logging.LogRecord("root", logging.WARNING, __file__, 1, "other", None, None))


def test_run_asr_learning_curve(dump: Path, tmp_path: Path, caplog) -> None:
    cfg = AsrConfig(hidden=16, layers=1, epochs=2, min_steps=6, beam=2)
    with caplog.at_level(logging.WARNING):
        res = run_asr(dump, tmp_path / "asr", fractions=(0.1, 1.0), cfg=cfg)  # 0.1: one cut
    assert "possibly mismatched duration" not in caplog.text
    saved = json.loads((tmp_path / "asr/results.json").read_text())
    assert saved == json.loads(json.dumps(res))
    train = load_manifest(dump / "librispeech_cuts_train.jsonl.gz")
    one, full = res["rows"]
    assert full["train_cuts"] == len(train) and one["train_cuts"] == 1
    assert full["train_hours"] == round(sum(c.duration for c in train) / 3600, 4)
    # the same rule for every share: cfg.epochs epochs, more until cfg.min_steps updates
    assert one["updates"] == one["epochs"] == 6 and len(one["train_loss"]) == 6
    assert (
        full["epochs"] >= 2 and full["updates"] >= 6 and len(full["train_loss"]) == full["epochs"]
    )
    # word decoding: vocabulary from the train transcripts; WER scored against the test's
    words = full["words"]
    test_words = [
        w
        for c in load_manifest(dump / "librispeech_cuts_test.jsonl.gz")
        for w in c.supervisions[0].text.split()
    ]
    assert words["ref_words"] == len(test_words) and 0 <= words["wer"]
    assert (
        res["vocabulary"]["words"] > 0 and res["vocabulary"]["source"] == "train split transcripts"
    )
    # the saved model scores what the run reported
    test, dim = load_asr_cuts(dump, "test")
    again = evaluate(load_recognizer(tmp_path / "asr/frac1/model.pt"), test, dim, cfg)
    assert again["greedy"] == full["greedy"]
    assert again["beam"] == full["beam"] and all(math.isfinite(x) for x in full["train_loss"])
    # another feature dimension than the model's: refused by name
    with pytest.raises(AsrError, match="39-dim features but the recogniser was trained on 7"):
        evaluate(PhoneRecognizer(7, 4, 1), test, dim, cfg)


def test_cuts_that_cannot_train_are_counted(
    dump: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cpc.audio import asr

    assert asr.ctc_min_steps([3, 3, 4, 4, 4, 5]) == 9 and asr.ctc_min_steps([]) == 0
    cuts, dim = load_asr_cuts(dump, "train")
    empty, long_ = sorted(c.id for c in cuts)[:2]
    real = asr._targets
    fake = {empty: [], long_: [5] * 10_000}  # no phone; more phones than output steps
    monkeypatch.setattr(asr, "_targets", lambda c: fake[c.id] if c.id in fake else real(c))
    _, log = asr.train_recognizer(cuts, dim, AsrConfig(hidden=8, layers=1, epochs=1, min_steps=0))
    assert log["skipped_train_cuts"][empty] == "no phone in its labels"
    assert log["skipped_train_cuts"][long_].startswith("10000 phones need 19999 CTC steps")
    assert set(log["skipped_train_cuts"]) == {empty, long_}
    assert "2 of" in caplog.text and "skipped_train_cuts" in caplog.text


def test_dump_without_labels_is_refused(dump: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "nolabels"
    shutil.copytree(dump, bad)
    path = bad / "librispeech_cuts_train.jsonl.gz"
    cuts = load_manifest(path)
    cuts = cuts.map(lambda c: c.with_custom("phone_labels", None) if c.id < "z" else c)
    for c in cuts:
        c.custom.pop("phone_labels", None)
    cuts.to_file(path)
    with pytest.raises(AsrError, match=r"cuts have no phone_labels.*run stages 1 and 3"):
        load_asr_cuts(bad, "train")
    with pytest.raises(AsrError, match="run the feature dump first"):
        load_asr_cuts(tmp_path / "missing", "train")
