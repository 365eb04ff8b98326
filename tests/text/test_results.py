"""The text results table's fold-paired comparisons, and their pooling over seeds
(egs/bookcorpus/local/compare_seeds.py): exact values on dyadic fold accuracies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cpc.text.results import paired_difference, paired_differences

ROOT = Path(__file__).resolve().parents[2]


def _res(folds: list[float], n: int = 40) -> dict:
    return {"accuracy": sum(folds) / len(folds), "fold_accuracies": folds, "num_items": n}


def test_paired_difference_is_exact() -> None:
    d = paired_difference(_res([0.5, 0.75, 0.625, 0.5]), _res([0.5, 0.5, 0.75, 0.25]))
    # differences 0, 0.25, -0.125, 0.25: mean 0.09375, sample std 0.1875, SE 0.1875 / 2
    assert d is not None
    assert (d["mean"], d["se"], d["folds"]) == (0.09375, 0.09375, 4)
    assert (d["above"], d["equal"], d["below"]) == (2, 1, 1)
    assert d["fold_differences"] == [0.0, 0.25, -0.125, 0.25]


def test_paired_difference_needs_the_same_folds() -> None:
    a = _res([0.5, 0.75])
    assert paired_difference(a, _res([0.5, 0.75, 0.5])) is None  # other number of folds
    assert paired_difference(a, _res([0.5, 0.75], n=41)) is None  # other items
    assert paired_difference(a, {"status": "not available"}) is None
    assert paired_difference(a, None) is None


def test_paired_differences_cover_every_pair_and_task_with_folds() -> None:
    found = {
        "cpc": {"senteval": {"MR-like": _res([0.75, 0.5]), "TREC": {"status": "not available"}}},
        "random": {"senteval": {"MR-like": _res([0.5, 0.5])}},
        "w2v_mean": {"senteval": {"MR-like": _res([0.75, 0.75])}},
    }
    out = paired_differences(found)
    assert set(out) == {"cpc-random", "cpc-w2v_mean"}
    assert out["cpc-random"]["MR-like"]["mean"] == 0.125
    assert out["cpc-w2v_mean"]["MR-like"]["mean"] == -0.125


def _load_compare_seeds():
    path = ROOT / "egs/bookcorpus/local/compare_seeds.py"
    spec = importlib.util.spec_from_file_location("compare_seeds", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_run(exp: Path, seed: int, cpc: list[float], random: list[float]) -> None:
    for ftype, folds in (("cpc", cpc), ("random", random)):
        d = exp / "probe_senteval" / ftype
        d.mkdir(parents=True)
        res = {
            "feature_type": ftype,
            "signature": {"options": {"seed": seed}},
            "MR-like": _res(folds),
        }
        (d / "results.json").write_text(json.dumps(res))


def test_compare_seeds_pools_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mod = _load_compare_seeds()
    _write_run(tmp_path / "a", 42, [0.5, 0.75, 0.625, 0.5], [0.5, 0.5, 0.75, 0.25])
    _write_run(tmp_path / "b", 1, [0.5, 0.5, 0.5, 0.5], [0.5, 0.625, 0.5, 0.5])
    out = tmp_path / "seeds.json"
    assert mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 0
    pooled = json.loads(out.read_text())["pooled"]["cpc-random"]["MR-like"]
    # per run 0.09375 and -0.03125: mean 0.03125, SE = |difference| / 2 = 0.0625
    assert pooled["per_run"] == [0.09375, -0.03125]
    assert (pooled["mean"], pooled["se"], pooled["runs"], pooled["runs_above"]) == (
        0.03125,
        0.0625,
        2,
        1,
    )
    text = capsys.readouterr().out
    assert "MR-like: mean +3.12 +- 6.25 over 2 runs, CPC above in 1 of 2" in text
    assert "seed 42: +9.38 +- 9.38; seed 1: -3.12 +- 3.12" in text


def test_compare_seeds_names_a_run_without_results(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mod = _load_compare_seeds()
    (tmp_path / "empty").mkdir()
    assert mod.main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: no probe_senteval/*/results.json; run stage 4" in err


def test_compare_seeds_refuses_runs_without_paired_folds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mod = _load_compare_seeds()
    d = tmp_path / "a" / "probe_senteval" / "cpc"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"feature_type": "cpc", "MR-like": _res([0.5])}))
    out = tmp_path / "seeds.json"
    assert mod.main([str(tmp_path / "a"), "--output", str(out)]) == 1
    assert "no run has cross-validated results of CPC and a baseline" in capsys.readouterr().err
    assert not out.exists()
