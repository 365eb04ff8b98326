"""Stage 1: CPC-release phone labels -> labelled lhotse cuts (cpc.audio.labels + its CLI)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.utils import compute_num_frames

from cpc.audio.labels import (
    CPC_PHONES,
    attach_phone_labels,
    cuts_path,
    labels_storage_dir,
    read_cpc_labels,
)
from cpc.audio.librispeech import DataPrepError, prepare_librispeech_manifests
from tests.factories import make_tiny_corpus

REPO = Path(__file__).resolve().parents[2]
# The CLIs import cpc from the repository root (path.sh puts it on PYTHONPATH).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
LOCAL = REPO / "egs/librispeech100/local"


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def rewrite_labels(labels_dir: Path, edit) -> None:
    """Replace each line's label tokens by ``edit(utt, tokens)`` (None drops the line)."""
    path = labels_dir / "converted_aligned_phones.txt"
    out = []
    for line in path.read_text().splitlines():
        utt, *tokens = line.split()
        new = edit(utt, tokens)
        if new is not None:
            out.append(" ".join([utt, *new]) + "\n")
    path.write_text("".join(out))


@pytest.fixture
def stage0(tmp_path):
    """A tiny corpus (2 speakers x 2 chapters x 3 utterances) with its stage-0 manifests."""
    corpus = make_tiny_corpus(tmp_path / "corpus")
    manifests = tmp_path / "data" / "manifests"
    prepare_librispeech_manifests(corpus.corpus_dir, manifests)
    return corpus, manifests, tmp_path / "data" / "lang"


def test_stages_0_and_1_cli_end_to_end(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", speakers=3, chapters=2, utts=3)
    for cmd in (
        ["prepare_manifests.py", "--corpus-dir", str(corpus.corpus_dir),
         "--output-dir", "data/manifests", "--num-jobs", "2"],
        ["prepare_labels.py", "--manifest-dir", "data/manifests",
         "--labels-dir", str(corpus.labels_dir), "--lang-dir", "data/lang",
         "--max-frame-diff", "3"],
    ):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, str(LOCAL / cmd[0]), *cmd[1:]],
            cwd=tmp_path,
            capture_output=True,
            env=ENV,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
    manifests = tmp_path / "data" / "manifests"
    speakers = {}
    for split in ("train", "test"):
        cuts = CutSet.from_file(manifests / f"librispeech_cuts_{split}.jsonl.gz")
        assert [c.id for c in cuts] == sorted(corpus.splits[split])
        for cut in cuts:
            assert cut.recording_id == cut.id == cut.supervisions[0].id
            expected = compute_num_frames(cut.duration, 0.01, 16000)
            assert expected == corpus.num_frames[cut.id]
            labels = cut.load_phone_labels()
            assert labels.dtype == np.int64 and labels.shape == (expected,)
            np.testing.assert_array_equal(labels, corpus.labels[cut.id])
            assert cut.phone_labels.frame_shift == 0.01 and cut.phone_labels.temporal_dim == 0
        speakers[split] = {c.supervisions[0].speaker for c in cuts}
    assert speakers["train"] == speakers["test"] == set(corpus.speakers)
    phones = (tmp_path / "data/lang/phones.txt").read_text().splitlines()
    assert phones == [f"{sym} {i}" for i, sym in enumerate(CPC_PHONES)]
    assert len(phones) == 41 and phones[0] == "SIL 0" and phones[-1] == "SPN 40"
    assert (manifests / "phone_labels_train").is_dir()


@pytest.mark.parametrize("diff", [2, -2])
def test_labels_off_by_two_frames_are_padded_or_trimmed(stage0, diff):
    corpus, manifests, lang = stage0

    def edit(utt, tokens):
        return tokens[:diff] if diff < 0 else tokens + ["7"] * diff

    rewrite_labels(corpus.labels_dir, edit)
    cuts = attach_phone_labels(manifests, corpus.labels_dir, lang, max_frame_diff=3)
    for split in ("train", "test"):
        for cut in CutSet.from_file(cuts_path(manifests, split)):
            got = cut.load_phone_labels()
            want = corpus.labels[cut.id]
            assert len(got) == corpus.num_frames[cut.id]
            if diff > 0:  # trimmed: the extra "7"s are gone
                np.testing.assert_array_equal(got, want)
            else:  # padded with the last remaining label
                np.testing.assert_array_equal(got[:diff], want[:diff])
                assert (got[diff:] == want[diff - 1]).all()
    assert len(cuts["train"]) + len(cuts["test"]) == len(corpus.utt_ids)


def test_factory_can_write_shorter_labels_which_are_padded(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", speakers=2, chapters=1, utts=2, label_frame_diff=2)
    manifests = tmp_path / "m"
    prepare_librispeech_manifests(corpus.corpus_dir, manifests)
    cuts = attach_phone_labels(manifests, corpus.labels_dir, tmp_path / "lang")
    for cut in cuts["train"] + cuts["test"]:
        got = cut.load_phone_labels()
        assert len(corpus.labels[cut.id]) == corpus.num_frames[cut.id] - 2
        assert len(got) == corpus.num_frames[cut.id]
        np.testing.assert_array_equal(got[-3:], [corpus.labels[cut.id][-1]] * 3)


def test_labels_ten_frames_short_are_refused_naming_the_utterance(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", label_frame_diff=10)
    manifests = tmp_path / "m"
    prepare_librispeech_manifests(corpus.corpus_dir, manifests)
    before = snapshot(manifests)
    with pytest.raises(DataPrepError) as e:
        attach_phone_labels(manifests, corpus.labels_dir, tmp_path / "lang", max_frame_diff=3)
    msg = str(e.value)
    utt = sorted(corpus.splits["train"])[0]
    n = corpus.num_frames[utt]
    assert f"{len(corpus.utt_ids)} utterances have label frame counts" in msg
    assert f"utterance {utt}: {n - 10} label frames" in msg
    assert f"but audio has {n} frames (" in msg and " s)" in msg
    assert "--max-frame-diff 3" in msg
    assert snapshot(manifests) == before  # nothing written
    assert not (tmp_path / "lang" / "phones.txt").exists()


@pytest.mark.parametrize(
    "token, why", [("x", "non-integer"), ("41", "too large"), ("-1", "negative"), ("2.5", "float")]
)
def test_bad_label_token_names_file_line_and_token(stage0, token, why):
    corpus, manifests, lang = stage0
    attach_phone_labels(manifests, corpus.labels_dir, lang)
    before, lang_before = snapshot(manifests), snapshot(lang)
    bad_utt = corpus.utt_ids[3]  # line 4 of the sorted file

    def edit(utt, tokens):
        return tokens[:5] + [token] + tokens[6:] if utt == bad_utt else tokens

    rewrite_labels(corpus.labels_dir, edit)
    with pytest.raises(DataPrepError) as e:
        attach_phone_labels(manifests, corpus.labels_dir, lang)
    msg = str(e.value)
    assert msg.startswith(f"{corpus.labels_dir / 'converted_aligned_phones.txt'}:4: ")
    assert f"utterance {bad_utt}, frame 5: '{token}' is not a class id" in msg
    assert "0..40" in msg and "fix the file" in msg
    assert snapshot(manifests) == before and snapshot(lang) == lang_before


def test_split_utterances_without_audio_or_labels_are_counted(stage0, caplog):
    corpus, manifests, lang = stage0
    no_labels = corpus.splits["train"][0]
    rewrite_labels(corpus.labels_dir, lambda utt, t: None if utt == no_labels else t)
    split = corpus.labels_dir / "train_split.txt"
    split.write_text(split.read_text() + "999-9999-0000\n999-9999-0001\n")
    with caplog.at_level(logging.WARNING):
        cuts = attach_phone_labels(manifests, corpus.labels_dir, lang)
    n_train = len(corpus.splits["train"])
    assert [c.id for c in cuts["train"]] == sorted(set(corpus.splits["train"]) - {no_labels})
    assert len(cuts["test"]) == len(corpus.splits["test"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"2 of {n_train + 2} utterances have no audio" in w and "999-9999-0000" in w
        for w in warnings
    )
    assert any(
        f"1 of {n_train + 2} utterances have no labels" in w and no_labels in w for w in warnings
    )


def test_split_with_no_usable_utterance_is_an_error(stage0):
    corpus, manifests, lang = stage0
    (corpus.labels_dir / "test_split.txt").write_text("999-9999-0000\n")
    with pytest.raises(DataPrepError, match="test_split.txt: none of its 1 utterances"):
        attach_phone_labels(manifests, corpus.labels_dir, lang)


def test_utterance_in_both_splits_is_an_error(stage0):
    corpus, manifests, lang = stage0
    test_split = corpus.labels_dir / "test_split.txt"
    test_split.write_text(test_split.read_text() + corpus.splits["train"][0] + "\n")
    with pytest.raises(
        DataPrepError, match=f"1 utterances are in both .* {corpus.splits['train'][0]}"
    ):
        attach_phone_labels(manifests, corpus.labels_dir, lang)


def test_without_phones_txt_the_builtin_41_classes_are_used(stage0, caplog):
    corpus, manifests, lang = stage0
    (corpus.labels_dir / "phones.txt").unlink()
    with caplog.at_level(logging.INFO):
        labels = read_cpc_labels(corpus.labels_dir)
        attach_phone_labels(manifests, corpus.labels_dir, lang)
    assert labels.phones_file is None and labels.phones == list(CPC_PHONES)
    assert len(CPC_PHONES) == 41 and len(set(CPC_PHONES)) == 41
    assert any("built-in 41-class list" in r.getMessage() for r in caplog.records)
    assert (lang / "phones.txt").read_text().splitlines()[:2] == ["SIL 0", "AA 1"]


def test_phones_txt_limits_the_class_ids(stage0):
    corpus, manifests, lang = stage0
    (corpus.labels_dir / "phones.txt").write_text("SIL 0\nAA 1\n")
    with pytest.raises(DataPrepError, match="is not a class id .*0..1"):
        attach_phone_labels(manifests, corpus.labels_dir, lang)


def test_missing_stage0_manifests_say_run_stage_0(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", speakers=1, chapters=1, utts=2)
    with pytest.raises(DataPrepError, match="run stage 0"):
        attach_phone_labels(tmp_path / "m", corpus.labels_dir, tmp_path / "lang")


def test_unwritable_lang_dir_is_a_clear_error(stage0, tmp_path):
    corpus, manifests, _ = stage0
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file")
    with pytest.raises(DataPrepError, match="cannot create output directory .*--lang-dir"):
        attach_phone_labels(manifests, corpus.labels_dir, blocker / "sub")
    assert not cuts_path(manifests, "train").exists()


def test_rerun_replaces_labels_and_leaves_no_temp_files(stage0):
    corpus, manifests, lang = stage0
    attach_phone_labels(manifests, corpus.labels_dir, lang)
    rewrite_labels(corpus.labels_dir, lambda utt, t: ["3"] * len(t))
    cuts = attach_phone_labels(manifests, corpus.labels_dir, lang)
    assert all((c.load_phone_labels() == 3).all() for c in cuts["train"])
    assert not [p for p in manifests.iterdir() if p.name.startswith(".")]
    stored = sorted(p.name for p in labels_storage_dir(manifests, "test").rglob("*.npy"))
    assert stored == sorted(f"{u}.npy" for u in corpus.splits["test"])


def test_cli_bad_labels_exit_1_without_traceback(stage0, tmp_path):
    corpus, manifests, lang = stage0
    rewrite_labels(corpus.labels_dir, lambda utt, t: ["oops"] + t[1:])
    proc = subprocess.run(
        [sys.executable, str(LOCAL / "prepare_labels.py"), "--manifest-dir", str(manifests),
         "--labels-dir", str(corpus.labels_dir), "--lang-dir", str(lang)],
        capture_output=True,
        env=ENV,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "converted_aligned_phones.txt:1: " in proc.stderr and "'oops'" in proc.stderr
    assert "Traceback" not in proc.stderr
