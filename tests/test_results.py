"""cpc.results: a probe entry with a status text instead of an accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from cpc.results import Column, ResultsSpec, make_results


def test_status_cells_show_their_text_and_are_not_pending(tmp_path: Path) -> None:
    spec = ResultsSpec(
        title="t",
        intro="i",
        columns=[Column("a", "A", "task", "a"), Column("b", "B", "task", "b")],
        rows={"x": "X", "y": "Y"},
    )
    d = tmp_path / "probe_task" / "feat_x"
    d.mkdir(parents=True)
    res = {"feature_type": "x", "dim": 3, "a": {"accuracy": 0.5}, "b": {"status": "not available"}}
    (d / "results.json").write_text(json.dumps(res))
    out = make_results(tmp_path, "tag", spec)
    assert out["rows"]["x"]["a"] == 0.5
    assert out["rows"]["x"]["b"] is None
    assert out["rows"]["x"]["status"] == {"b": "not available"}
    assert out["pending"] == ["y"]  # y has no results at all; x's b is not pending
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| X (`feat_x`) | 3 | 50.0 | not available |" in md
    assert "| Y | – | pending | pending |" in md


def test_paper_only_row_is_filled_once_measured(tmp_path: Path) -> None:
    spec = ResultsSpec(
        title="t",
        intro="i",
        columns=[Column("a", "A", "task", "a")],
        rows={"x": "X"},
        paper={"x": {"a": 60.0}, "sup": {"a": 70.0}},
        paper_only={"sup": "Supervised"},
    )
    for name, ftype, acc in (("feat_x", "x", 0.5), ("sup_x", "sup", 0.75)):
        d = tmp_path / "probe_task" / name
        d.mkdir(parents=True)
        res = {"feature_type": ftype, "dim": 3, "a": {"accuracy": acc}}
        (d / "results.json").write_text(json.dumps(res))
    make_results(tmp_path, "tag", spec)
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| Supervised (`sup_x`) | 3 | 75.0 | 70 |" in md
    assert "paper only" not in md
    # without its results, the row shows the paper's number only
    (tmp_path / "probe_task" / "sup_x" / "results.json").unlink()
    make_results(tmp_path, "tag", spec)
    assert "| Supervised (paper only) | – | – | 70 |" in (tmp_path / "RESULTS.md").read_text()
