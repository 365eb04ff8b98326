"""The results table of the text recipe: SentEval accuracies beside the paper's Table 5."""

from __future__ import annotations

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
