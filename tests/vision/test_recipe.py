"""egs/imagenet end to end on the tiny switch (conf/cpc_tiny.yaml: 40 train / 10 val
Fashion-MNIST images per class), in a copy of the recipe directory: every stage, the table's
numbers equal to what the probes wrote, and a second run that skips every stage.
About 2-4 minutes on 2 busy cores (most of it Python start-up of the stages' scripts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.factories import make_recipe_copy, run_recipe
from tests.needs import require


@pytest.mark.slow
def test_tiny_recipe_end_to_end_and_rerun_skips(tmp_path: Path) -> None:
    share = Path(sys.prefix) / "share" / "fashion-mnist"
    require((share / "train-images-idx3-ubyte.gz").is_file(), f"Fashion-MNIST in {share}")
    d = make_recipe_copy(tmp_path / "imagenet", "imagenet")
    run_recipe(d, "--config", "conf/cpc_tiny.yaml")
    m = d / "data/manifests"
    assert len((m / "train.tsv").read_text().splitlines()) == 1 + 400
    assert len((m / "val.tsv").read_text().splitlines()) == 1 + 100
    exp = d / "exp/cpc_tiny"
    best = torch.load(exp / "best.pt", weights_only=True)
    valid = [
        json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines() if '"valid"' in x
    ]
    assert [r["step"] for r in valid] == [6, 12]
    assert best["valid"]["loss"] == min(r["loss"] for r in valid)
    sup = torch.load(exp / "supervised/best.pt", weights_only=True)
    assert sup["config"]["model"]["objective"] == "supervised"
    assert sup["config"]["model"]["num_classes"] == 10

    with np.load(d / "data/feats/pixels/val.npz") as z:
        assert z["x"].shape == (100, 28 * 28) and np.bincount(z["y"]).tolist() == [10] * 10
    results = json.loads((exp / "results.json").read_text())
    for feat, row in (
        ("cpc_cpc_tiny", "cpc"),
        ("random_cpc_tiny", "random"),
        ("pixels", "pixels"),
        ("supervised_cpc_tiny", "supervised"),
    ):
        probe = json.loads((exp / "probe_image_class" / feat / "results.json").read_text())
        assert results["rows"][row]["top1"] == probe["linear"]["accuracy"]
        assert results["top5"][row] == probe["linear"]["top5_accuracy"]
        assert probe["num_train"] == 400 and probe["num_test"] == 100
        assert probe["linear"]["config"]["optimizer"] == "sgd"
        per_class = probe["linear"]["per_class_accuracy"]
        assert np.mean(list(per_class.values())) == pytest.approx(probe["linear"]["accuracy"])
    assert results["pending"] == []
    md = (exp / "RESULTS.md").read_text()
    assert "| 48.7 |" in md and "73.6" in md and "71.5" in md
    assert "(`--eval-view subcrop`)" in md  # the view the encoders saw, from the CPC dump
    for fig in ("loss_curve.png", "tsne_val.png"):
        assert (exp / fig).is_file()

    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    r = run_recipe(d, "--config", "conf/cpc_tiny.yaml")
    for n in range(5):
        assert f"stage {n} (" in r.stderr and "already done with the same options" in r.stderr
    assert r.stderr.count("already done with the same options") == 5
    after = {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file()}
    assert before == after
