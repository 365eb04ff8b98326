"""The results table of the text recipe: SentEval accuracies beside the paper's Table 5."""

from __future__ import annotations

from typing import Any

import numpy as np

from cpc.results import Column, ResultsContext, ResultsSpec

PAPER_TASKS = ("MR", "CR", "SUBJ", "MPQA", "TREC")
COLUMNS = [Column(key, key, "senteval", key) for key in ("MR-like", "CR-like", *PAPER_TASKS)]


def _sections(ctx: ResultsContext) -> list[str]:
    lines = ["", "## Protocol", ""]
    lines.append(
        "Logistic regression (scikit-learn) on frozen, standardised sentence features. "
        "MR, CR, SUBJ, MPQA and the -like tasks: 10-fold stratified cross-validation, C "
        "chosen by an inner stratified cross-validation in each fold; TREC: its train/test "
        "split. MR-like and CR-like are the embedded tasks (vaderSentiment's movie and "
        "Amazon snippets, labels = sign of the mean human rating): similar data, not the "
        "benchmarks, so their numbers are not comparable with the paper's columns."
    )
    cov = {}
    for ftype, f in ctx.found.items():
        r = f.get("senteval") or {}
        if r.get("coverage"):
            cov[ftype] = r["coverage"]
        for task in COLUMNS:
            t = r.get(task.key) or {}
            if "majority" in t:
                ctx.extra.setdefault("majority", {})[task.key] = t["majority"]
    if ctx.extra.get("majority"):
        lines += [
            "",
            "Majority class: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in ctx.extra["majority"].items()),
        ]
    lines += _paired_section(ctx)
    lines += _regularisation(ctx)
    if cov:
        lines += [
            "",
            "## Vocabulary expansion coverage",
            "",
            "| features | task | tokens | before | after |",
            "|---|---|---:|---:|---:|",
        ]
        for ftype, per_task in cov.items():
            for task, c in per_task.items():
                lines.append(
                    f"| {ftype} | {task} | {c['tokens']} | {100 * c['before']:.1f}% | "
                    f"{100 * c['after']:.1f}% |"
                )
        ctx.extra["coverage"] = cov
    return lines


# the comparisons the recipe's goal is about: CPC against its baselines, fold by fold
PAIRS = (("cpc", "random"), ("cpc", "w2v_mean"), ("cpc", "bow"))


def paired_difference(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """CPC minus a baseline on the same cross-validation folds: the mean of the per-fold
    accuracy differences (fractions), its standard error (sample std / sqrt(folds)), and in
    how many folds ``a`` is above, equal to and below ``b``. None unless both results hold
    per-fold accuracies of the same folds (same number of items and folds; the fold split
    depends on the items, labels and seed only, so two feature types of one run share it)."""
    if not a or not b or not a.get("fold_accuracies") or not b.get("fold_accuracies"):
        return None
    fa, fb = np.asarray(a["fold_accuracies"]), np.asarray(b["fold_accuracies"])
    if fa.shape != fb.shape or a.get("num_items") != b.get("num_items"):
        return None
    d = fa - fb
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {
        "mean": float(d.mean()),
        "se": se,
        "folds": len(d),
        "above": int((d > 0).sum()),
        "equal": int((d == 0).sum()),
        "below": int((d < 0).sum()),
        "fold_differences": d.tolist(),
    }


def paired_differences(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"cpc-random": {task: paired_difference}}`` for every pair of ``PAIRS`` with folds."""
    out: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        ra, rb = (
            (found.get(a) or {}).get("senteval") or {},
            (found.get(b) or {}).get("senteval") or {},
        )
        for task in COLUMNS:
            diff = paired_difference(ra.get(task.key), rb.get(task.key))
            if diff is not None:
                out.setdefault(f"{a}-{b}", {})[task.key] = diff
    return out


def _paired_section(ctx: ResultsContext) -> list[str]:
    """Fold-paired differences: every row is scored on the same folds, so CPC minus a baseline
    fold by fold removes the folds' own spread (much of the +- of the table)."""
    diffs = paired_differences(ctx.found)
    if not diffs:
        return []
    ctx.extra["paired_differences"] = diffs
    lines = [
        "",
        "## CPC against the baselines, fold by fold",
        "",
        "CPC's accuracy minus the baseline's on the same folds: mean over the folds +- its "
        "standard error (points), and the folds where CPC is above / equal / below. A "
        "difference within about two standard errors is not distinguishable from a tie; "
        "runs with other seeds (`--seed`) show how much it moves "
        "(`local/compare_seeds.py` pools them).",
        "",
        "| CPC minus | task | difference | folds above / equal / below |",
        "|---|---|---:|---|",
    ]
    for pair, per_task in diffs.items():
        for task, d in per_task.items():
            lines.append(
                f"| {pair.split('-', 1)[1]} | {task} | {100 * d['mean']:+.2f} +- "
                f"{100 * d['se']:.2f} | {d['above']} / {d['equal']} / {d['below']} |"
            )
    return lines


def _regularisation(ctx: ResultsContext) -> list[str]:
    """The C each evaluation chose (its range over the folds), and where it was an end of the
    grid: there the best C may lie outside the grid (widen ``--c-grid``)."""
    rows, grid, edges = [], None, []
    for ftype, f in ctx.found.items():
        r = f.get("senteval") or {}
        for task in COLUMNS:
            t = r.get(task.key) or {}
            if not t.get("chosen_c"):
                continue
            grid = t.get("c_grid", grid)
            cs = t["chosen_c"]
            at = t.get("c_at_grid_edge") or {}
            hit = ", ".join(f"{end} end in {n}/{len(cs)}" for end, n in at.items() if n)
            if hit:
                edges.append(f"{ftype} {task.key}")
            rows.append(f"| {ftype} | {task.key} | {min(cs):g} - {max(cs):g} | {hit or 'no'} |")
    if not rows:
        return []
    out = ["", "## Regularisation", ""]
    if grid:
        out.append("C grid: " + ", ".join(f"{c:g}" for c in grid) + ".")
    if edges:
        out.append(
            "**C at an end of the grid** for " + ", ".join(edges) + ": the best C may lie "
            "beyond it; widen `--c-grid` and re-run stage 4."
        )
    out += [
        "",
        "| features | task | C chosen (folds) | at an end of the grid |",
        "|---|---|---|---|",
    ]
    return out + rows


SPEC = ResultsSpec(
    title="CPC sentence embeddings, SentEval tasks (accuracy %)",
    intro="Test accuracy of logistic regression on frozen sentence features; the paper's "
    "numbers (van den Oord et al. 2018, Table 5) beside.",
    columns=COLUMNS,
    rows={
        "cpc": "CPC (z, vocabulary expansion)",
        "random": "random-init encoder (vocabulary expansion)",
        "w2v_mean": "mean of word2vec vectors",
        "bow": "bag of words",
    },
    paper={
        "cpc": {"MR": 76.9, "CR": 80.1, "SUBJ": 91.2, "MPQA": 87.7, "TREC": 96.8},
        "skipthought": {"MR": 76.5, "CR": 80.1, "SUBJ": 93.6, "MPQA": 87.1, "TREC": 92.2},
    },
    paper_only={"skipthought": "skip-thought, combine-skip (Kiros et al. 2015)"},
    sections=_sections,
)
