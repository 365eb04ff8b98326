#!/usr/bin/env python3
"""CPC against its baselines over several runs (seeds, or any runs scored by stage 4).

Within one run every feature type is scored on the same folds, so CPC minus a baseline fold
by fold (stage 5's "fold by fold" table) removes the folds' own spread; what is left still
moves with the seed (word vectors, model initialisation, folds). This script reads several
runs and reports, per comparison and task, each run's fold-paired difference and their
mean over the runs +- its standard error across the runs (the seed-to-seed spread, the
honest error bar for "CPC is above the baseline"), and how many runs have CPC above.

Input:  EXP_DIR/probe_senteval/<features>/results.json of each run (stage 4)
Output: a table on stdout; --output FILE: the same as JSON

Example (from egs/bookcorpus, after ./run.sh --seed N for N = 1, 2, 3):
    python local/compare_seeds.py exp/cpc_small exp/cpc_small_seed{1,2,3} --output exp/seeds.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cpc.cli import HelpFormatter
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.results import accuracy, collect
from cpc.text.results import COLUMNS, PAIRS, paired_differences


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("exp_dirs", nargs="+", help="experiment directories exp/<tag> (stage 4 done)")
    p.add_argument("--output", default="", help="also write the summary as JSON to this file")
    return p


def _seed(found: dict[str, dict[str, Any]]) -> int | None:
    for f in found.values():
        seed = ((f.get("senteval") or {}).get("signature") or {}).get("options", {}).get("seed")
        if seed is not None:
            return int(seed)
    return None


def summarise(exp_dirs: list[Path]) -> dict[str, Any]:
    """``{"runs": [{exp_dir, seed, accuracy, differences}], "pooled": {pair: {task: ...}}}``."""
    runs = []
    for d in exp_dirs:
        found = collect(d, ["senteval"], set())
        if not found:
            raise FileNotFoundError(
                f"{d}: no probe_senteval/*/results.json; run stage 4 of that experiment first"
            )
        acc = {
            ftype: {
                c.key: v for c in COLUMNS if (v := accuracy(f.get("senteval"), c.key)) is not None
            }
            for ftype, f in found.items()
        }
        runs.append(
            {
                "exp_dir": str(d),
                "seed": _seed(found),
                "accuracy": acc,
                "differences": paired_differences(found),
            }
        )
    pooled: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        pair = f"{a}-{b}"
        for c in COLUMNS:
            means = [
                r["differences"][pair][c.key]["mean"]
                for r in runs
                if c.key in r["differences"].get(pair, {})
            ]
            if not means:
                continue
            m = np.asarray(means)
            pooled.setdefault(pair, {})[c.key] = {
                "mean": float(m.mean()),
                "se": float(m.std(ddof=1) / np.sqrt(len(m))) if len(m) > 1 else float("nan"),
                "runs": len(m),
                "runs_above": int((m > 0).sum()),
                "per_run": m.tolist(),
            }
    return {"runs": runs, "pooled": pooled}


def render(summary: dict[str, Any]) -> str:
    lines = []
    for pair, per_task in summary["pooled"].items():
        lines.append(f"CPC minus {pair.split('-', 1)[1]} (points; per run: fold-paired mean +- SE)")
        for task, p in per_task.items():
            per_run = []
            for r in summary["runs"]:
                d = r["differences"].get(pair, {}).get(task)
                if d is not None:
                    per_run.append(
                        f"seed {r['seed']}: {100 * d['mean']:+.2f} +- {100 * d['se']:.2f}"
                    )
            lines.append(
                f"  {task}: mean {100 * p['mean']:+.2f} +- {100 * p['se']:.2f} over {p['runs']} "
                f"runs, CPC above in {p['runs_above']} of {p['runs']}  ({'; '.join(per_run)})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        summary = summarise([Path(d) for d in args.exp_dirs])
    except FileNotFoundError as e:
        logging.error(str(e))
        return 1
    if not summary["pooled"]:
        logging.error(
            "no run has cross-validated results of CPC and a baseline on the same folds "
            "(MR-like, CR-like, MR, CR, SUBJ or MPQA); run stage 4 with --feature-types "
            "including cpc and a baseline"
        )
        return 1
    print(render(summary))
    if args.output:
        write_json_atomic(Path(args.output), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
