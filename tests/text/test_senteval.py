"""SentEval reading and protocol: stratified deterministic folds, malformed lines, absent
tasks, a separable task scored perfectly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cpc.text.senteval import (
    DEFAULT_C_GRID,
    SentEvalError,
    TaskData,
    evaluate,
    grid_edge_counts,
    read_task,
    stratified_folds,
)


def test_folds_are_stratified_and_deterministic() -> None:
    y = np.array([0] * 70 + [1] * 30)
    folds = stratified_folds(y, 10, seed=5)
    assert len(folds) == 10
    test_idx = np.concatenate([te for _, te in folds])
    assert sorted(test_idx.tolist()) == list(range(100))  # every item tested exactly once
    for tr, te in folds:
        assert np.bincount(y[te]).tolist() == [7, 3]
        assert len(set(tr) & set(te)) == 0
    again = stratified_folds(y, 10, seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = stratified_folds(y, 10, seed=6)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def test_binary_task_reads_latin1_and_absent_tasks_are_none(tmp_path: Path) -> None:
    _write(tmp_path / "MR" / "rt-polarity.pos", ["a charming caf\xe9 film .", "great !"])
    _write(tmp_path / "MR" / "rt-polarity.neg", ["dull ."])
    t = read_task(tmp_path, "MR")
    assert t is not None
    assert t.sentences == [["dull", "."], ["a", "charming", "caf\xe9", "film", "."], ["great", "!"]]
    assert t.labels.tolist() == [0, 1, 1] and t.classes == ["neg", "pos"]
    assert read_task(tmp_path, "SUBJ") is None
    assert read_task(tmp_path, "TREC") is None


def test_malformed_lines_name_the_file_and_the_line(tmp_path: Path) -> None:
    _write(tmp_path / "TREC" / "train_5500.label", ["DESC:manner How did serfdom develop ?"])
    bad = tmp_path / "TREC" / "TREC_10.label"
    _write(bad, ["NUM:date When was Ozzy born ?", "no label here"])
    with pytest.raises(SentEvalError, match=rf"^{re.escape(str(bad))} line 2: expected"):
        read_task(tmp_path, "TREC")
    _write(bad, ["NUM:date When was Ozzy born ?"])
    t = read_task(tmp_path, "TREC")
    assert t is not None and t.test_start == 1 and t.classes == ["DESC", "NUM"]
    neg = tmp_path / "CR" / "custrev.neg"
    _write(tmp_path / "CR" / "custrev.pos", ["good"])
    _write(neg, ["bad", "   ", "worse"])
    with pytest.raises(SentEvalError, match=rf"^{re.escape(str(neg))} line 2: no words"):
        read_task(tmp_path, "CR")


def test_separable_features_score_perfectly_and_record_the_protocol() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40)
    x = rng.normal(size=(80, 4))
    x[:, 0] += 6 * y  # class is readable from dim 0
    task = TaskData("toy", [["w"]] * 80, y, ["a", "b"])
    r = evaluate(x, task, [0.25, 1.0], folds=5, inner_folds=3, seed=0)
    assert r["accuracy"] == 1.0 and len(r["fold_accuracies"]) == 5
    assert r["class_counts"] == [40, 40] and r["majority"] == 0.5
    assert all(c in (0.25, 1.0) for c in r["chosen_c"])
    again = evaluate(x, task, [0.25, 1.0], folds=5, inner_folds=3, seed=0)
    assert again["fold_accuracies"] == r["fold_accuracies"]
    assert again["chosen_c"] == r["chosen_c"]
    edge = r["c_at_grid_edge"]  # a two-value grid: every choice is an end of it
    assert edge == {"low": r["chosen_c"].count(0.25), "high": r["chosen_c"].count(1.0)}
    assert edge["low"] + edge["high"] == 5


def test_grid_edge_counts() -> None:
    grid = [0.001, 0.01, 0.1, 1.0]
    assert grid_edge_counts([0.01, 0.1, 0.01], grid) == {"low": 0, "high": 0}
    assert grid_edge_counts([0.001, 1.0, 0.001, 0.1], grid) == {"low": 2, "high": 1}
    assert grid_edge_counts([0.5, 0.5], [0.5]) == {"low": 0, "high": 0}  # no edge to report
    # the default: ascending powers of 4 (the smallest rounded), each 4x the one before
    assert all(abs(b / a - 4) < 0.1 for a, b in zip(DEFAULT_C_GRID, DEFAULT_C_GRID[1:]))


def test_results_table_reports_c_at_the_grid_edge(tmp_path: Path) -> None:
    from cpc.results import ResultsContext
    from cpc.text.results import _regularisation

    def res(cs: list[float]) -> dict:
        grid = [0.01, 0.1, 1.0]
        return {"chosen_c": cs, "c_grid": grid, "c_at_grid_edge": grid_edge_counts(cs, grid)}

    found = {
        "cpc": {"senteval": {"MR-like": res([0.1, 0.1, 0.01]), "CR-like": res([0.1, 0.1, 0.1])}},
        "bow": {"senteval": {"MR-like": res([0.01, 0.01, 0.01])}},
    }
    md = "\n".join(_regularisation(ResultsContext(tmp_path, "t", found, {}, [])))
    assert "C grid: 0.01, 0.1, 1." in md
    assert "**C at an end of the grid** for cpc MR-like, bow MR-like:" in md
    assert "| cpc | MR-like | 0.01 - 0.1 | low end in 1/3 |" in md
    assert "| cpc | CR-like | 0.1 - 0.1 | no |" in md
    assert "| bow | MR-like | 0.01 - 0.01 | low end in 3/3 |" in md
