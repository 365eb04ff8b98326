"""Results tables: probe accuracies of an experiment beside the paper's numbers.

Domain-agnostic. An experiment directory holds probe results written by
:func:`cpc.probe_runner.run_probe_task` under ``EXP_DIR/probe_<task>/<feature dir>/``. A
domain describes its table with a :class:`ResultsSpec` (which columns, read from which task
and probe, the row labels, the paper's numbers, extra sections); :func:`make_results`
collects the results, renders ``RESULTS.md`` and ``results.json`` and draws the k-step
prediction-accuracy figure from the trainer's ``metrics.jsonl``.

A row whose probe has not run yet shows ``pending`` (never a number); paper cells without a
number show ``–``. A probe result without an accuracy but with a ``"status"`` text (e.g. a task
whose data is absent: ``{"status": "not available"}``) shows that text, is not pending, and is
listed under the row's ``status`` in ``results.json``. Accuracies in ``results.json`` are
fractions in [0, 1]; the paper's numbers are stored the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cpc.io import write_json_atomic, write_text_atomic

PENDING = "pending"


class ResultsError(ValueError):
    """Missing or inconsistent probe results (the message names what to run)."""


@dataclass(frozen=True)
class Column:
    """A table column: the accuracy of probe ``probe`` of task ``task``."""

    key: str
    header: str
    task: str
    probe: str


@dataclass
class ResultsContext:
    """What a domain's extra sections get: the experiment, its rows and raw results."""

    exp_dir: Path
    tag: str
    found: dict[str, dict[str, Any]]
    rows: dict[str, dict[str, Any]]
    figures: list[str]
    figure_notes: list[str] = field(default_factory=list)  # "- `name.png`: what it shows"
    extra: dict[str, Any] = field(default_factory=dict)  # goes into results.json


@dataclass
class ResultsSpec:
    """A domain's results table (see the module docstring).

    ``rows``: feature types in display order with their labels (a type missing from the
    experiment shows ``pending``); ``paper``: ``{row: {column key: percent}}``;
    ``paper_only``: rows shown with the paper's numbers only (e.g. ``supervised``) until the
    experiment has probe results of that feature type, which then fill the row (its label
    kept);
    ``preferred_dirs(tag)``: feature directories that win when two dumps share a type;
    ``sections(ctx)``: markdown lines appended after the table (chance levels, protocol),
    which may draw figures (appending to ``ctx.figures`` and ``ctx.figure_notes``) and add
    ``ctx.extra`` entries to results.json."""

    title: str
    intro: str
    columns: list[Column]
    rows: dict[str, str]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    paper_only: dict[str, str] = field(default_factory=dict)
    preferred_dirs: Callable[[str], set[str]] = lambda tag: set()
    sections: Callable[[ResultsContext], list[str]] | None = None

    @property
    def tasks(self) -> list[str]:
        return sorted({c.task for c in self.columns})


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


def collect(exp_dir: Path, tasks: list[str], preferred: set[str]) -> dict[str, dict[str, Any]]:
    """Per feature type: ``{"dir": name, <task>: results or None}``. Directory names in
    ``preferred`` win over other dumps of the same type (with a warning for the others)."""
    names: set[str] = set()
    for task in tasks:
        d = exp_dir / f"probe_{task}"
        if d.is_dir():
            names |= {p.name for p in d.iterdir() if (p / "results.json").is_file()}
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(names, key=lambda n: (n not in preferred, n)):
        res = {t: _read(exp_dir / f"probe_{t}" / name / "results.json") for t in tasks}
        first = next((r for r in res.values() if r), {})
        ftype = first.get("feature_type") or name
        if ftype in found:
            logging.warning(f"{name}: another {ftype} dump ({found[ftype]['dir']}) is used")
            continue
        found[ftype] = {"dir": name, "dim": first.get("dim"), **res}
    return found


def accuracy(results: dict[str, Any] | None, probe: str) -> float | None:
    """``results[probe]["accuracy"]`` or None when that probe has no result."""
    if results is None or probe not in results or results[probe].get("accuracy") is None:
        return None
    return float(results[probe]["accuracy"])


def _status(results: dict[str, Any] | None, probe: str) -> str | None:
    """``results[probe]["status"]`` (why a probe has no accuracy) or None."""
    entry = (results or {}).get(probe)
    return str(entry["status"]) if isinstance(entry, dict) and entry.get("status") else None


def build_rows(spec: ResultsSpec, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{feature type: {"feature_dir", "dim", <column key>: accuracy or None}}``."""
    rows: dict[str, dict[str, Any]] = {}
    for ftype in [*spec.rows, *sorted(set(found) - set(spec.rows))]:
        f = found.get(ftype)
        row: dict[str, Any] = {"feature_dir": f["dir"] if f else None, "dim": f and f["dim"]}
        for c in spec.columns:
            row[c.key] = accuracy(f.get(c.task), c.probe) if f else None
            status = _status(f.get(c.task) if f else None, c.probe)
            if row[c.key] is None and status:
                row.setdefault("status", {})[c.key] = status
        rows[ftype] = row
    return rows


def pct(v: float | None, missing: str = PENDING) -> str:
    """A fraction as a percentage with one decimal, or ``missing``."""
    return missing if v is None else f"{100 * v:.1f}"


def render_table(spec: ResultsSpec, rows: dict[str, dict[str, Any]]) -> list[str]:
    """The markdown table: this run's columns, then the paper's."""
    paper_cols = [c for c in spec.columns if any(c.key in p for p in spec.paper.values())]
    head = ["features", "dim", *[c.header for c in spec.columns]]
    head += [f"paper: {c.header}" for c in paper_cols]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for ftype, r in rows.items():
        label = spec.rows.get(ftype) or spec.paper_only.get(ftype) or ftype
        name = f"{label} (`{r['feature_dir']}`)" if r["feature_dir"] else label
        status = r.get("status", {})
        cells = [name, str(r["dim"] or "–")]
        cells += [pct(r[c.key], status.get(c.key, PENDING)) for c in spec.columns]
        cells += [_paper(spec, ftype, c.key) for c in paper_cols]
        out.append("| " + " | ".join(cells) + " |")
    for ftype, label in spec.paper_only.items():
        if ftype in rows:
            continue  # measured: shown above
        cells = [f"{label} (paper only)", "–", *["–" for _ in spec.columns]]
        cells += [_paper(spec, ftype, c.key) for c in paper_cols]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _paper(spec: ResultsSpec, row: str, key: str) -> str:
    v = spec.paper.get(row, {}).get(key)
    return "–" if v is None else f"{v:g}"


def kstep_curve(metrics: Path, last: int = 5) -> dict[str, Any] | None:
    """Prediction accuracy per step k from ``metrics.jsonl``: the newest validation record
    when there is one (held-out windows), else the mean of the last ``last`` training
    records. ``{"step", "split", "accuracy": [...]}`` or None without such records."""
    if not metrics.is_file():
        return None
    recs: dict[str, list[tuple[int, list[float]]]] = {"train": [], "valid": []}
    for line in metrics.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        acc = rec.get("accuracy")
        if isinstance(acc, list) and acc:
            recs[rec.get("split", "train")].append((int(rec.get("step", 0)), acc))
    if recs["valid"]:
        step, acc = max(recs["valid"], key=lambda r: r[0])
        return {"step": step, "split": "valid", "accuracy": acc}
    if not recs["train"]:
        return None
    train = sorted(recs["train"], key=lambda r: r[0])
    tail = [a for _, a in train[-last:] if len(a) == len(train[-1][1])]
    mean = np.mean(np.asarray(tail, dtype=np.float64), axis=0).tolist()
    return {"step": train[-1][0], "split": "train", "accuracy": mean}


def make_results(exp_dir: Path, tag: str, spec: ResultsSpec) -> dict[str, Any]:
    """Write ``EXP_DIR/RESULTS.md``, ``results.json`` and ``kstep_accuracy.png``; returns
    the results dict. ResultsError when no probe has run at all."""
    from cpc.plots import kstep_accuracy_png

    exp_dir = Path(exp_dir)
    found = collect(exp_dir, spec.tasks, spec.preferred_dirs(tag))
    if not found:
        raise ResultsError(
            f"{exp_dir}: no probe results in "
            + ", ".join(f"probe_{t}/" for t in spec.tasks)
            + "; run the probe stages first"
        )
    rows = build_rows(spec, found)
    pending = [
        k
        for k, r in rows.items()
        if any(r[c.key] is None and c.key not in r.get("status", {}) for c in spec.columns)
    ]
    if pending:
        logging.warning(f"results still pending for {pending}")
    figures: list[str] = []
    kstep = kstep_curve(exp_dir / "metrics.jsonl")
    if kstep:
        where = "validation" if kstep["split"] == "valid" else "training"
        kstep_accuracy_png(
            {f"{tag}, step {kstep['step']} ({where})": kstep["accuracy"]},
            exp_dir / "kstep_accuracy.png",
            title="Contrastive prediction accuracy, k steps ahead",
        )
        figures.append("kstep_accuracy.png")
    ctx = ResultsContext(exp_dir, tag, found, rows, figures)
    if kstep:
        acc = kstep["accuracy"]
        ctx.figure_notes.append(
            f"- `kstep_accuracy.png`: InfoNCE prediction accuracy for k = 1..{len(acc)} steps "
            f"ahead at step {kstep['step']}, on {where} windows (k=1: {pct(acc[0])}%, "
            f"k={len(acc)}: {pct(acc[-1])}%)."
        )
    md = [f"# {spec.title}: {tag}", "", spec.intro, "", *render_table(spec, rows)]
    if spec.sections is not None:
        md += spec.sections(ctx)
    if ctx.figure_notes:
        md += ["", "## Figures", "", *ctx.figure_notes]
    results = {
        "tag": tag,
        "rows": rows,
        "pending": pending,
        "paper": {k: {m: v / 100 for m, v in d.items()} for k, d in spec.paper.items()},
        "kstep_accuracy": kstep,
        **ctx.extra,
        "figures": figures,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(exp_dir / "results.json", results)
    write_text_atomic(exp_dir / "RESULTS.md", "\n".join(md) + "\n")
    return results
