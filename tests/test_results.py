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
