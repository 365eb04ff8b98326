"""egs/librispeech100/local/run_table2.sh + make_table2.py: the paper's Table 2 in one command.

The end-to-end test runs two variants (K = 2 and K = 4) of the tiny config on a tiny corpus,
two at a time (--gpus 2: the path that spreads variants over GPUs; without GPUs each run just
uses the CPU), and checks that both rows are measured, equal to their probes' results, and
that the eight others are pending; then that a re-run trains nothing again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from egs.librispeech100.local.make_table2 import PAPER_K, PAPER_NEGATIVES, Table2Error, make_table2
from tests.factories import make_recipe_copy, make_tiny_corpus


def _write_probe(exp_root: Path, tag: str, acc: float) -> None:
    d = exp_root / tag / "probe_phone" / f"cpc_{tag}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"linear": {"accuracy": acc}}))


def test_table_has_measured_and_pending_rows(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    _write_probe(exp, "t_k8", 0.61234)
    _write_probe(exp, "t_same", 0.5)
    rows = {"k8": "t_k8", "k16": "t_k16", "same_speaker": "t_same"}
    out = make_table2(exp, tmp_path / "table2", rows, "conf/x.yaml")
    md = (tmp_path / "table2" / "TABLE2.md").read_text()
    assert "| 8 steps | 61.2 | 63.6 | `t_k8` |" in md
    assert "| 16 steps | pending | 63.8 | `t_k16` |" in md  # no result yet
    assert "| Same speaker | 50.0 | 65.5 | `t_same` |" in md
    assert "| 2 steps | pending | 28.5 | – |" in md  # not run at all
    assert out["rows"]["k8"]["accuracy"] == pytest.approx(0.61234)
    assert out["rows"]["k16"]["accuracy"] is None
    assert set(out["pending"]) == (set(PAPER_K) | set(PAPER_NEGATIVES)) - {"k8", "same_speaker"}
    assert out["rows"]["current_sequence"]["paper"] == pytest.approx(0.652)
    assert (tmp_path / "table2" / "table2_k.png").stat().st_size > 1000
    with pytest.raises(Table2Error, match="unknown variants"):
        make_table2(exp, tmp_path / "t", {"k3": "x"})


def _run(d: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["./local/run_table2.sh", *args], cwd=d, capture_output=True, text=True, env=os.environ
    )
    if ok:
        assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


@pytest.mark.slow
def test_two_variants_end_to_end(tmp_path: Path) -> None:
    corpus = make_tiny_corpus(tmp_path / "corpus", speakers=2, chapters=2, utts=2, seed=1)
    d = make_recipe_copy(tmp_path / "librispeech100")
    args = [
        *["--config", "conf/cpc_tiny.yaml", "--variants", "k2 k4", "--gpus", "2", "--nj", "1"],
        *["--corpus-dir", str(corpus.corpus_dir), "--labels-dir", str(corpus.labels_dir)],
        *["--probe-min-steps", "20"],
    ]
    r = _run(d, *args)
    table = json.loads((d / "exp/table2/table2.json").read_text())
    md = (d / "exp/table2/TABLE2.md").read_text()
    for v, steps in (("k2", 2), ("k4", 4)):
        row = table["rows"][v]
        probe = d / "exp" / row["tag"] / "probe_phone" / f"cpc_{row['tag']}" / "results.json"
        acc = json.loads(probe.read_text())["linear"]["accuracy"]
        assert row["accuracy"] == acc and 0 < acc <= 1
        assert f"| {steps} steps | {100 * acc:.1f} | {PAPER_K[v]:g} | `{row['tag']}` |" in md
        cfg = (d / "exp" / row["tag"] / "config.yaml").read_text()
        assert re.search(rf"prediction_steps: {steps}\b", cfg)
        # only the variant's own features: no MFCC / random-init baselines
        assert not (d / "exp" / row["tag"] / "probe_phone" / "mfcc").exists()
    assert table["rows"]["k2"]["tag"] != table["rows"]["k4"]["tag"]
    others = (set(PAPER_K) | set(PAPER_NEGATIVES)) - {"k2", "k4"}
    assert set(table["pending"]) == others
    assert md.count("| pending |") == len(others)
    # a re-run resumes: every finished stage of both variants is skipped
    r = _run(d, *args)
    assert "stage 2: CPC pre-training" not in r.stderr
    assert "torchrun" not in r.stderr
    logs = [(d / "exp/table2/log" / f"{v}.log").read_text() for v in ("k2", "k4")]
    assert all("already done with the same options, skipping" in s for s in logs)
    # an unknown variant is refused by name before anything runs
    r = _run(d, *args[:2], "--variants", "k3", ok=False)
    assert r.returncode == 1 and "unknown variant k3" in r.stderr
