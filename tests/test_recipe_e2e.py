"""The LibriSpeech-100 recipe end to end on a tiny embedded corpus (stages 0-5), in a copy of
the recipe directory, then the resume behaviour: a second run skips every stage.

CI runs the tiny variant (4 speakers, 2 minutes, conf/cpc_tiny.yaml, ~2-3 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lhotse import load_manifest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs/librispeech100"


def make_recipe_copy(dst: Path) -> Path:
    """A recipe directory as a user would set one up elsewhere: conf/ and run.sh copied,
    utils/, local/, path.sh linked (as Kaldi's egs link steps/ and utils/)."""
    dst.mkdir()
    for name in ("run.sh", "cmd.sh"):
        shutil.copy2(RECIPE / name, dst / name)
    shutil.copytree(RECIPE / "conf", dst / "conf")
    for name in ("local", "utils", "path.sh"):
        (dst / name).symlink_to((RECIPE / name).resolve())
    return dst


def run_recipe(d: Path, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["./run.sh", *args], cwd=d, capture_output=True, text=True, env={**os.environ}
    )
    assert r.returncode == 0, (
        f"run.sh {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    )
    return r


@pytest.mark.slow
def test_stages_0_to_5_tiny(tmp_path: Path) -> None:
    d = make_recipe_copy(tmp_path / "librispeech100")
    args = ["--config", "conf/cpc_tiny.yaml", "--mini-speakers", "4", "--mini-minutes", "2"]
    run_recipe(d, "--stage", "0", "--stop-stage", "1", *args)

    # Stages 0-1: manifests, labels on every cut, both splits.
    m = d / "data/manifests"
    for name in (
        "librispeech_recordings_train-clean-100.jsonl.gz",
        "librispeech_supervisions_train-clean-100.jsonl.gz",
    ):
        assert (m / name).is_file()
    speakers = {}
    for split in ("train", "test"):
        cuts = load_manifest(m / f"librispeech_cuts_{split}.jsonl.gz")
        assert len(cuts) > 0
        for c in cuts:
            labels = c.load_phone_labels()
            assert labels.shape[0] == c.num_frames if c.has_features else labels.shape[0] > 0
            assert labels.min() >= 0 and labels.max() < 41
        speakers[split] = {c.supervisions[0].speaker for c in cuts}
    assert speakers["train"] == speakers["test"] and len(speakers["train"]) == 4

    run_recipe(d, "--stage", "2", "--stop-stage", "5", *args)
    results = json.loads((d / "exp/cpc_tiny/results.json").read_text())
    rows = results["rows"] if "rows" in results else results
    for feat in ("cpc", "mfcc", "random"):
        assert feat in rows, results
        for key in ("phone_linear", "phone_mlp", "speaker_linear"):
            assert 0.0 <= rows[feat][key] <= 1.0, (feat, key, rows[feat])
    assert (d / "exp/cpc_tiny/RESULTS.md").is_file()

    # Everything is done: a second run skips all six stages.
    r = run_recipe(d, "--stage", "0", "--stop-stage", "5", *args)
    assert r.stderr.count("already done with the same options") == 6, r.stderr
