"""The dmlab recipe end to end on its tiny MiniGrid variant, in a copy of the recipe
directory: stages 0-4 write RESULTS.md and results.json with returns of the random,
baseline and CPC agents; a second run skips every stage; the table reads the runs of the
given seeds only."""

from __future__ import annotations

import json
import shutil

import pytest

from cpc.rl.results import make_results
from tests.factories import make_recipe_copy, run_recipe
from tests.needs import require


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    import importlib.util

    require(importlib.util.find_spec("minigrid") is not None, "the minigrid package")
    d = make_recipe_copy(tmp_path_factory.mktemp("rl") / "dmlab", "dmlab")
    first = run_recipe(d, "--tiny", "true", "--seeds", "1")
    return d, first


def test_tiny_recipe_runs_every_stage(recipe):
    d, first = recipe
    exp = d / "exp" / "tiny"
    for n in range(5):
        assert f"stage {n}:" in first.stderr
    check = json.loads((exp / "env_check.json").read_text())
    assert check["suite"] == "minigrid" and check["observation_shape"] == [28, 28, 3]
    assert (exp / "frame.png").is_file() and (exp / "curves.png").is_file()
    res = json.loads((exp / "results.json").read_text())
    rows = res["rows"]
    assert set(rows) == {"random", "baseline", "cpc"}
    for name in ("random", "baseline_seed1", "cpc_seed1"):
        ev = json.loads((exp / "eval" / f"{name}.json").read_text())
        assert ev["episodes"] == 4 and len(ev["returns"]) == 4
        assert ev["mean"] == pytest.approx(sum(ev["returns"]) / 4)
    assert rows["random"]["mean"] == json.loads((exp / "eval/random.json").read_text())["mean"]
    for agent in ("baseline", "cpc"):
        seed1 = rows[agent]["seeds"]["1"]
        ev = json.loads((exp / "eval" / f"{agent}_seed1.json").read_text())
        assert seed1["eval_mean"] == ev["mean"] and rows[agent]["mean"] == ev["mean"]
        assert seed1["frames"] == 6 * 4 * 12  # max_steps x num_envs x unroll
    md = (exp / "RESULTS.md").read_text()
    assert "random policy" in md and "A2C + CPC" in md and "CPC vs baseline" in md


def test_second_run_skips_every_stage(recipe):
    d, _ = recipe
    again = run_recipe(d, "--tiny", "true", "--seeds", "1")
    assert again.stderr.count("already done with the same options, skipping") == 5
    assert "stage 1:" not in again.stderr


def test_results_read_only_the_runs_of_the_given_seeds(recipe, tmp_path):
    """Stage 4 reads the runs of --seeds only: a run dir left from an earlier seed list is
    not mixed into the table."""
    d, _ = recipe
    exp = tmp_path / "exp"
    shutil.copytree(d / "exp" / "tiny", exp)
    shutil.copytree(exp / "baseline_seed1", exp / "baseline_seed7")
    both = make_results(exp, "tiny")
    assert sorted(both["rows"]["baseline"]["seeds"]) == [1, 7]
    assert both["rows"]["baseline"]["seeds"][7]["eval_mean"] is None  # never evaluated
    only = make_results(exp, "tiny", seeds=[1])
    assert list(only["rows"]["baseline"]["seeds"]) == [1]
