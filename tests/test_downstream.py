"""Reusing a stage-3 dump downstream (lhotse samplers + collation, as an icefall recipe does;
egs/librispeech100/local/example_downstream.py) and the results table (local/make_results.py)."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.dataset import SimpleCutSampler
from lhotse.dataset.collation import collate_custom_field, collate_features

from cpc.features import resolve_cut_paths
from tests.factories import make_labelled_manifests, mfcc_dump


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("down")
    manifests, lang, _ = make_labelled_manifests(root, speakers=3, chapters=2, utts=3)
    return mfcc_dump(manifests, root / "mfcc"), lang


def test_sampler_and_collation_read_the_dump(dump: tuple[Path, Path]) -> None:
    feats_dir, _ = dump
    # storage paths are relative to the dump directory: plain lhotse plus one map resolves them
    cuts = load_manifest_lazy(feats_dir / "librispeech_cuts_train.jsonl.gz").map(
        partial(resolve_cut_paths, base=str(feats_dir))
    )
    sampler = SimpleCutSampler(cuts, max_duration=5.0, shuffle=False)
    seen = 0
    for batch in sampler:
        batch = CutSet.from_cuts(batch)
        x, lens = collate_features(batch)
        y, ylens = collate_custom_field(batch, "phone_labels", pad_value=-100)
        assert x.shape[0] == len(batch) and x.shape[2] == 39 and torch.equal(lens, ylens)
        for i, cut in enumerate(batch):
            n = int(lens[i])
            assert n == cut.num_frames
            np.testing.assert_array_equal(x[i, :n].numpy(), cut.load_features())
            assert (y[i, n:] == -100).all() and (y[i, :n] >= 0).all()
        seen += len(batch)
    assert seen == len(list(cuts))


def test_example_downstream_script(dump: tuple[Path, Path]) -> None:
    from egs.librispeech100.local.example_downstream import main

    feats_dir, _ = dump
    assert main(["--feature-dir", str(feats_dir), "--max-duration", "5", "--num-batches", "2"]) == 0
    assert main(["--feature-dir", str(feats_dir.parent / "missing")]) == 1


def test_make_results(dump: tuple[Path, Path], tmp_path: Path) -> None:
    from local.make_results import main as make_results
    from local.probe import main as probe

    feats_dir, lang = dump
    exp = tmp_path / "exp" / "t"
    common = ["--feature-dir", str(feats_dir), "--seed", "1", "--num-threads", "1"]
    common += ["--min-steps", "0", "--batch-size", "256"]
    assert (
        probe(
            [
                "phone",
                *common,
                "--lang-dir",
                str(lang),
                "--output-dir",
                str(exp / "probe_phone/mfcc"),
            ]
            + ["--linear-epochs", "1", "--mlp-epochs", "1", "--mlp-hidden", "8"]
        )
        == 0
    )
    assert probe(["speaker", *common, "--output-dir", str(exp / "probe_speaker/mfcc")]) == 0
    # the same results posing as the other two rows (the dumps would be cpc_t, random_t)
    for name, ftype in (("cpc_t", "cpc"), ("random_t", "random")):
        for task in ("phone", "speaker"):
            src = exp / f"probe_{task}/mfcc"
            dst = exp / f"probe_{task}/{name}"
            shutil.copytree(src, dst)
            res = json.loads((dst / "results.json").read_text())
            res["feature_type"] = ftype
            (dst / "results.json").write_text(json.dumps(res))
    with open(exp / "metrics.jsonl", "w") as f:
        for step in (10, 20):
            rec = {"split": "train", "step": step, "loss": 2.0, "accuracy": [0.9, 0.7, 0.5]}
            f.write(json.dumps(rec) + "\n")
        f.write('{"step": 30, "loss"')  # a line cut by a kill is ignored
    # only the phone probe of the random row has run so far: its speaker cell is pending
    shutil.rmtree(exp / "probe_speaker/random_t")
    assert make_results(["--exp-dir", str(exp), "--tag", "t", "--domain", "audio"]) == 0
    res = json.loads((exp / "results.json").read_text())
    phone = json.loads((exp / "probe_phone/mfcc/results.json").read_text())
    speaker = json.loads((exp / "probe_speaker/mfcc/results.json").read_text())
    for k in ("cpc", "mfcc", "random"):
        row = res["rows"][k]
        # the table holds exactly what the probes wrote
        assert row["phone_linear"] == phone["linear"]["accuracy"]
        assert row["phone_mlp"] == phone["mlp"]["accuracy"]
        assert row["speaker_linear"] == (None if k == "random" else speaker["linear"]["accuracy"])
    assert res["pending"] == ["random"]
    assert res["paper"]["cpc"]["phone_linear"] == pytest.approx(0.646)
    assert res["kstep_accuracy"] == {"step": 20, "split": "train", "accuracy": [0.9, 0.7, 0.5]}
    md = (exp / "RESULTS.md").read_text()
    for number in ("64.6", "72.5", "97.4", "39.7", "17.6", "27.6", "1.87", "74.6", "98.5"):
        assert number in md
    assert "+-2 frames" in md and "Chance levels" in md
    random_line = next(x for x in md.splitlines() if x.startswith("| Random init ("))
    assert random_line.split(" | ")[4] == "pending"
    assert (exp / "kstep_accuracy.png").stat().st_size > 1000
    assert (exp / "tsne_speakers.png").stat().st_size > 1000
    assert make_results(["--exp-dir", str(tmp_path / "empty"), "--tag", "t"]) == 1  # no domain
    empty = ["--exp-dir", str(tmp_path / "empty"), "--tag", "t", "--domain", "audio"]
    assert make_results(empty) == 1
