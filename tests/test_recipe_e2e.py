"""The LibriSpeech-100 recipe end to end on a tiny embedded corpus, in a copy of the recipe
directory: stages 0-7 (labels by forced alignment) with the values the run wrote checked
against what its inputs give,
a re-run that skips every stage, and every way of changing an input (seed, corpus, config
contents, another corpus) ending in a model trained on the new inputs or in a refusal that
names the difference, never in a silently reused model.

CI runs these tiny variants (4 speakers, 2 minutes, conf/cpc_tiny.yaml): a few minutes on
2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import load_manifest
from lhotse.utils import compute_num_frames

from cpc.audio.constants import DUMP_SPEC, PREFIX
from cpc.features import collect_frames, load_dump
from cpc.probes import ProbeConfig, ProbeData, majority_chance, standardize, train_probe
from tests.factories import make_recipe_copy, make_tiny_corpus, run_recipe

TINY = ["--config", "conf/cpc_tiny.yaml", "--mini-speakers", "4", "--mini-minutes", "2"]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def phone_labels(cut, n):
    return cut.load_custom("phone_labels")


# Stage 1 by forced alignment, and small budgets for the aligner, the probes and the
# downstream ASR.
ALIGN = [
    *["--align", "true", "--align-iterations", "2", "--asr-epochs", "2", "--asr-min-steps", "0"],
    *["--probe-min-steps", "1000"],
]


@pytest.mark.slow
def test_stages_0_to_7_tiny(tmp_path: Path) -> None:
    d = make_recipe_copy(tmp_path / "librispeech100")
    run_recipe(d, "--stage", "0", "--stop-stage", "1", *TINY, *ALIGN)

    # Stage 1 aligned the transcripts: CPC-format labels, statistics and the agreement with
    # the corpus's true labels; the cuts carry exactly the aligned labels.
    from cpc.audio.labels import read_cpc_labels

    aligned = read_cpc_labels(d / "data/align")
    stats = json.loads((d / "data/align/alignment_stats.json").read_text())
    quality = json.loads((d / "data/align/alignment_quality.json").read_text())
    assert stats["aligned"] == len(aligned.alignments) == quality["utterances"]
    assert stats["failed_count"] == 0 and len(stats["config"]) > 0
    assert 0.0 < quality["frame_agreement"] <= 1.0 and quality["boundaries"] > 0

    # Stages 0-1: manifests, labels on every cut with exactly the cut's 10 ms frame count.
    m = d / "data/manifests"
    for name in (
        "librispeech_recordings_train-clean-100.jsonl.gz",
        "librispeech_supervisions_train-clean-100.jsonl.gz",
    ):
        assert (m / name).is_file()
    speakers, test_labels = {}, []
    for split in ("train", "test"):
        cuts = load_manifest(m / f"librispeech_cuts_{split}.jsonl.gz")
        assert len(cuts) > 0
        for c in cuts:
            labels = c.load_custom("phone_labels")
            assert labels.shape == (compute_num_frames(c.duration, 0.01, 16000),)
            np.testing.assert_array_equal(labels, aligned.alignments[c.id])
            assert labels.min() >= 0 and labels.max() < 41
            if split == "test":
                test_labels.append(labels)
        speakers[split] = {c.supervisions[0].speaker for c in cuts}
    assert speakers["train"] == speakers["test"] and len(speakers["train"]) == 4

    run_recipe(d, "--stage", "2", "--stop-stage", "7", *TINY, *ALIGN)
    exp = d / "exp/cpc_tiny"
    # Stage 2: best.pt is the checkpoint of the lowest validation loss in metrics.jsonl.
    recs = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in recs if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [10, 20]
    best = torch.load(exp / "best.pt", weights_only=True)
    assert best["valid"]["loss"] == min(r["loss"] for r in valid)
    assert best["step"] == min(valid, key=lambda r: r["loss"])["step"]
    assert best["identity"]["config"]["train.seed"] == 42

    # Stage 3: dumps with one frame per label, for every cut.
    for feat in ("cpc_cpc_tiny", "mfcc", "random_cpc_tiny"):
        for c in load_dump(d / "data" / feat, "test", PREFIX):
            assert c.load_features().shape[0] == c.load_custom("phone_labels").shape[0]

    # Stages 4-5: the table holds what the probes wrote; the probes' counts and chance
    # levels are what the labels give; the accuracy is what the seeded probe gives.
    results = json.loads((exp / "results.json").read_text())
    y_test = np.concatenate(test_labels)
    for feat, row in (("cpc_cpc_tiny", "cpc"), ("mfcc", "mfcc"), ("random_cpc_tiny", "random")):
        phone = json.loads((exp / "probe_phone" / feat / "results.json").read_text())
        speaker = json.loads((exp / "probe_speaker" / feat / "results.json").read_text())
        r = results["rows"][row]
        assert r["phone_linear"] == phone["linear"]["accuracy"]
        assert r["phone_mlp"] == phone["mlp"]["accuracy"]
        assert r["speaker_linear"] == speaker["linear"]["accuracy"]
        assert phone["num_test"] == len(y_test) and speaker["num_speakers"] == 4
        conf = np.array(phone["linear"]["confusion"])
        assert conf.sum(1).tolist() == np.bincount(y_test, minlength=41).tolist()
    feats = d / "data/mfcc"
    x_tr, y_tr, off_tr, _ = collect_frames(
        list(load_dump(feats, "train", PREFIX)), DUMP_SPEC, phone_labels
    )
    x_te, y_te, _, _ = collect_frames(
        list(load_dump(feats, "test", PREFIX)), DUMP_SPEC, phone_labels
    )
    mfcc_phone = json.loads((exp / "probe_phone/mfcc/results.json").read_text())
    assert mfcc_phone["chance"]["majority"] == majority_chance(y_tr, y_te)
    # offsets: the plateau schedule holds whole training utterances out
    tr, te = ProbeData.from_numpy(x_tr, y_tr, off_tr), ProbeData.from_numpy(x_te, y_te)
    standardize(tr.x, te.x)
    cfg = ProbeConfig(**mfcc_phone["linear"]["config"])
    assert train_probe(tr, te, 41, cfg).accuracy == mfcc_phone["linear"]["accuracy"]
    assert (exp / "RESULTS.md").is_file()
    assert "pending" not in (exp / "RESULTS.md").read_text()

    # Stage 6: a PER per feature set and training share, as the saved models score it.
    asr = json.loads((exp / "asr/results.json").read_text())
    assert sorted(asr) == sorted(["cpc_cpc_tiny", "mfcc", "random_cpc_tiny"])
    table = (exp / "asr/RESULTS.md").read_text()
    for feat, res in asr.items():
        assert [r["fraction"] for r in res["rows"]] == [0.1, 0.3, 1.0]
        full = res["rows"][-1]
        assert full["train_cuts"] == len(list(load_dump(d / "data" / feat, "train", PREFIX)))
        assert len(full["train_loss"]) == 2 and 0 <= full["greedy"]["per"]
        assert f"| {feat} | {res['dim']} |" in table
        assert f"{100 * full['greedy']['per']:.2f} / {100 * full['beam']['per']:.2f}" in table
    # Stage 7: ABX within and across speakers for every feature set.
    abx = json.loads((exp / "abx/results.json").read_text())
    assert sorted(abx) == sorted(asr) and (exp / "abx/RESULTS.md").is_file()
    # The tiny test split (one utterance per speaker) may hold no triphone minimal pair, so
    # the counts depend on the alignment; what must hold: every feature set is scored on the
    # same sampled triplets (shared labels and seed), and a mode without triplets says so.
    abx_md = (exp / "abx/RESULTS.md").read_text()
    for mode in ("within", "across"):
        (n,) = {res[mode]["triplets"] for res in abx.values()}
        for res in abx.values():
            if n:
                assert 0 <= res[mode]["error"] <= 1
            else:
                assert res[mode]["error"] is None and "no triplets" in abx_md

    # Everything is done: a second run skips all eight stages.
    r = run_recipe(d, "--stage", "0", "--stop-stage", "7", *TINY, *ALIGN)
    assert r.stderr.count("already done with the same options") == 8, r.stderr


@pytest.mark.slow
def test_changed_inputs_never_reuse_a_stale_model(tmp_path: Path) -> None:
    d = make_recipe_copy(tmp_path / "librispeech100")
    s02 = ["--stage", "0", "--stop-stage", "2"]
    run_recipe(d, *s02, *TINY)
    first = weights(d / "exp/cpc_tiny/best.pt")

    # Another seed: a new experiment (exp/cpc_tiny_seed7) with other weights; the seed-42
    # experiment is untouched; an unchanged re-run skips. (Stage 2 alone: the seed also
    # makes another embedded corpus in stages 0-1, which the other cases below cover.)
    s2 = ["--stage", "2", "--stop-stage", "2"]
    run_recipe(d, *s2, *TINY, "--seed", "7")
    seven = weights(d / "exp/cpc_tiny_seed7/best.pt")
    assert not same_weights(first, seven)
    assert same_weights(first, weights(d / "exp/cpc_tiny/best.pt"))
    r = run_recipe(d, *s2, *TINY, "--seed", "7")
    assert r.stderr.count("already done with the same options") == 1, r.stderr

    # The clean corpus variant (same ids and durations, other audio) under the same tag:
    # stage 2 refuses, naming the data; --restart-exp true moves the old experiment aside.
    r = run_recipe(d, *s02, *TINY, "--mini-clean", "true", ok=False)
    assert r.returncode != 0
    assert "was trained on other inputs" in r.stderr and "data.sha256" in r.stderr
    assert "--restart-exp true" in r.stderr and "--tag" in r.stderr
    assert same_weights(first, weights(d / "exp/cpc_tiny/best.pt"))  # nothing overwritten
    run_recipe(d, *s02, *TINY, "--mini-clean", "true", "--restart-exp", "true")
    (old,) = (d / "exp").glob("cpc_tiny.old-*")
    assert same_weights(first, weights(old / "best.pt"))
    clean = weights(d / "exp/cpc_tiny/best.pt")
    assert not same_weights(first, clean)
    r = run_recipe(d, *s02, *TINY, "--mini-clean", "true")
    assert r.stderr.count("already done with the same options") == 3, r.stderr

    # The config edited in place (same file name, other contents): stage 2 re-runs and
    # refuses to continue the checkpoint trained under the old contents.
    conf = d / "conf/cpc_tiny.yaml"
    conf.write_text(conf.read_text().replace("lr: 1.0e-3", "lr: 3.0e-3"))
    r = run_recipe(d, *s02, *TINY, "--mini-clean", "true", ok=False)
    assert r.returncode != 0 and "config.optim.lr: 0.001 -> 0.003" in r.stderr
    # a change that does not alter the weights (more frequent logging) continues instead
    conf.write_text(conf.read_text().replace("lr: 3.0e-3", "lr: 1.0e-3"))
    conf.write_text(conf.read_text().replace("log_interval: 5", "log_interval: 2"))
    r = run_recipe(d, *s02, *TINY, "--mini-clean", "true")
    assert "already at step 20" in r.stdout + r.stderr  # resumed the finished run
    assert same_weights(clean, weights(d / "exp/cpc_tiny/best.pt"))

    # Another corpus (--corpus-dir, --labels-dir) with the default tag: refused, named.
    corpus = make_tiny_corpus(tmp_path / "other", speakers=2, chapters=2, utts=3)
    other = ["--corpus-dir", str(corpus.corpus_dir), "--labels-dir", str(corpus.labels_dir)]
    r = run_recipe(d, *s02, "--config", "conf/cpc_tiny.yaml", *other, ok=False)
    assert r.returncode != 0 and "data.sha256" in r.stderr
    assert "--tag" in r.stderr  # the way out: a tag of its own
