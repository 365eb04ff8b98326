"""Stage 0: LibriSpeech layout -> lhotse manifests (cpc.audio.librispeech + its CLI)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from cpc.audio.librispeech import DataPrepError, manifest_paths, prepare_librispeech_manifests
from tests.factories import make_tiny_corpus

REPO = Path(__file__).resolve().parents[2]
# The CLIs import cpc from the repository root (path.sh puts it on PYTHONPATH).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
CLI = REPO / "egs/librispeech100/local/prepare_manifests.py"


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    return make_tiny_corpus(tmp_path / "corpus", speakers=2, chapters=2, utts=3)


def test_manifests_describe_the_corpus(corpus, tmp_path):
    out = tmp_path / "manifests"
    recs, sups = prepare_librispeech_manifests(corpus.corpus_dir, out, num_jobs=2)
    rec_path, sup_path = manifest_paths(out)
    assert rec_path.name == "librispeech_recordings_train-clean-100.jsonl.gz"
    assert sup_path.name == "librispeech_supervisions_train-clean-100.jsonl.gz"
    recs_disk, sups_disk = RecordingSet.from_file(rec_path), SupervisionSet.from_file(sup_path)
    assert [r.id for r in recs_disk] == corpus.utt_ids == [r.id for r in recs]
    assert [s.id for s in sups_disk] == corpus.utt_ids == [s.id for s in sups]
    assert sorted(os.listdir(out)) == sorted([rec_path.name, sup_path.name])  # no temp left
    for rec, sup in zip(recs_disk, sups_disk):
        info = sf.info(str(corpus.flac(rec.id)))
        assert rec.sampling_rate == 16000
        assert rec.num_samples == info.frames
        assert Path(rec.sources[0].source) == corpus.flac(rec.id).resolve()
        assert Path(rec.sources[0].source).is_absolute()
        spk, chap, _ = rec.id.split("-")
        assert sup.recording_id == rec.id
        assert sup.start == 0 and sup.duration == rec.duration and sup.channel == 0
        assert sup.speaker == spk
        assert sup.gender == corpus.genders[spk]
        assert sup.custom == {"chapter": chap}
        assert sup.language == "English"
        assert sup.text == corpus.texts[rec.id]
    # audio is readable through the manifest
    assert recs_disk[0].load_audio().shape == (1, recs_disk[0].num_samples)


def test_lhotse_recipe_prepares_any_part_and_matches_reading_each_file(corpus, tmp_path, caplog):
    """A part in lhotse's layout is prepared by lhotse.recipes.prepare_librispeech (chapter
    and gender added on top); the same corpus in another layout is read file by file: the
    manifests are the same. Other parts of the corpus (here train-other-500) work alike."""
    import shutil

    caplog.set_level(logging.INFO)
    lhotse_recs, lhotse_sups = prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "a")
    assert "by lhotse's prepare_librispeech" in caplog.text
    caplog.clear()
    odd = tmp_path / "odd" / "my-part"  # not named after the part: read here, file by file
    shutil.copytree(corpus.part_dir, odd)
    shutil.copy(corpus.corpus_dir / "SPEAKERS.TXT", odd.parent / "SPEAKERS.TXT")
    own_recs, own_sups = prepare_librispeech_manifests(odd, tmp_path / "b")
    assert "by lhotse's prepare_librispeech" not in caplog.text

    def same(m):  # paths differ by the copy
        return [{**x.to_dict(), "sources": None} for x in m]

    assert same(lhotse_recs) == same(own_recs) and same(lhotse_sups) == same(own_sups)
    other = tmp_path / "LibriSpeech"
    shutil.copytree(corpus.part_dir, other / "train-other-500")
    recs, sups = prepare_librispeech_manifests(other, tmp_path / "c", part="train-other-500")
    assert [r.id for r in recs] == corpus.utt_ids
    assert manifest_paths(tmp_path / "c", "train-other-500")[0].is_file()


@pytest.mark.parametrize("where", ["part", "parent"])
def test_accepts_part_dir_or_parent_of_librispeech(corpus, tmp_path, where):
    given = corpus.part_dir if where == "part" else corpus.corpus_dir.parent
    recs, sups = prepare_librispeech_manifests(given, tmp_path / "m", num_jobs=1)
    assert [r.id for r in recs] == corpus.utt_ids
    assert {s.gender for s in sups} == {"F", "M"}  # SPEAKERS.TXT found in both cases


def test_missing_corpus_dir_is_a_clear_error_and_keeps_old_manifests(corpus, tmp_path):
    out = tmp_path / "manifests"
    prepare_librispeech_manifests(corpus.corpus_dir, out)
    before = snapshot(out)
    missing = tmp_path / "nowhere" / "LibriSpeech"
    with pytest.raises(DataPrepError) as e:
        prepare_librispeech_manifests(missing, out)
    msg = str(e.value)
    assert f"corpus dir {missing} does not exist" in msg
    assert "--corpus-dir" in msg and "train-clean-100/" in msg and "embedded corpus" in msg
    assert snapshot(out) == before


def test_corpus_dir_without_the_part_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPrepError, match="holds no train-clean-100/"):
        prepare_librispeech_manifests(tmp_path / "empty", tmp_path / "m")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_flac_names_the_file_and_keeps_old_manifests(corpus, tmp_path, damage):
    out = tmp_path / "manifests"
    prepare_librispeech_manifests(corpus.corpus_dir, out)
    before = snapshot(out)
    bad = corpus.flac(corpus.utt_ids[4])
    data = bad.read_bytes()
    bad.write_bytes(b"not a flac file" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DataPrepError) as e:
        prepare_librispeech_manifests(corpus.corpus_dir, out)
    msg = str(e.value)
    assert msg.startswith("1 audio files could not be read")
    assert str(bad.resolve()) in msg
    assert "re-download" in msg and "delete the utterance" in msg
    assert snapshot(out) == before


def test_transcript_line_without_audio_is_counted_and_skipped(corpus, tmp_path, caplog):
    gone = corpus.utt_ids[1]
    corpus.flac(gone).unlink()
    with caplog.at_level(logging.WARNING):
        recs, sups = prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "m")
    assert [r.id for r in recs] == [u for u in corpus.utt_ids if u != gone]
    assert len(sups) == len(corpus.utt_ids) - 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 transcript lines have no audio" in w and gone in w for w in warnings)


def test_audio_without_transcript_is_counted_and_skipped(corpus, tmp_path, caplog):
    utt = corpus.utt_ids[0]
    trans = corpus.trans(utt)
    lines = trans.read_text().splitlines(keepends=True)
    trans.write_text("".join(line for line in lines if not line.startswith(utt + " ")))
    with caplog.at_level(logging.WARNING):
        recs, _ = prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "m")
    assert utt not in {r.id for r in recs} and len(recs) == len(corpus.utt_ids) - 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 audio files have no transcript line" in w and utt in w for w in warnings)


def test_transcript_line_of_another_chapter_names_file_and_line(corpus, tmp_path):
    trans = corpus.trans(corpus.utt_ids[0])
    trans.write_text(trans.read_text() + "999-999-0000 WRONG CHAPTER\n")
    with pytest.raises(DataPrepError, match=rf"{trans}:4: utterance id '999-999-0000'"):
        prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "m")


def test_transcript_not_utf8_names_file_line_bytes_and_fix(corpus, tmp_path):
    out = tmp_path / "manifests"
    prepare_librispeech_manifests(corpus.corpus_dir, out)
    before = snapshot(out)
    utt = corpus.utt_ids[1]
    trans = corpus.trans(utt)
    lines = trans.read_bytes().splitlines(keepends=True)
    assert lines[1].startswith(utt.encode() + b" ")
    lines[1] = utt.encode() + b" CAF\xe9 AU LAIT\n"  # latin-1 "é"
    trans.write_bytes(b"".join(lines))
    with pytest.raises(DataPrepError) as e:
        prepare_librispeech_manifests(corpus.corpus_dir, out)
    msg = str(e.value)
    column, offset = len(utt) + 4, len(lines[0]) + len(utt) + 4
    assert msg.startswith(
        f"{trans}:2: not UTF-8 text (byte 0xe9 at byte {column} of the line, {offset} of the file)"
    )
    assert "iconv -f latin1 -t utf-8" in msg and "re-extract it from the LibriSpeech" in msg
    assert snapshot(out) == before
    # the fix the message gives works
    trans.write_bytes(trans.read_bytes().decode("latin-1").encode("utf-8"))
    _, sups = prepare_librispeech_manifests(corpus.corpus_dir, out)
    assert {s.id: s.text for s in sups}[utt] == "CAF\u00e9 AU LAIT"


def test_missing_speakers_txt_only_drops_gender(corpus, tmp_path):
    (corpus.corpus_dir / "SPEAKERS.TXT").unlink()
    _, sups = prepare_librispeech_manifests(corpus.corpus_dir, tmp_path / "m")
    assert {s.gender for s in sups} == {None}


def test_unwritable_output_dir_is_a_clear_error(corpus, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file where a directory should be")
    with pytest.raises(DataPrepError, match="cannot create output directory .*somefile/sub"):
        prepare_librispeech_manifests(corpus.corpus_dir, blocker / "sub")


def test_cli_exits_1_with_one_message_and_no_traceback(tmp_path):
    missing = tmp_path / "no_corpus"
    proc = subprocess.run(
        [sys.executable, str(CLI), "--corpus-dir", str(missing), "--output-dir", str(tmp_path)],
        capture_output=True,
        env=ENV,
        text=True,
    )
    assert proc.returncode == 1
    assert f"corpus dir {missing} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
