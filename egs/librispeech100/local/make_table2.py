#!/usr/bin/env python3
"""The CPC paper's Table 2 from the variants' phone probes (local/run_table2.sh, step 3).

Input:  EXP_ROOT/<tag>/probe_phone/cpc_<tag>/results.json of every variant (run.sh stage 4),
        given as --rows VARIANT=TAG (variants k2 k4 k8 k12 k16 mixed_speaker same_speaker
        mixed_speaker_excl same_speaker_excl current_sequence).
Output: OUTPUT_DIR/TABLE2.md (two tables, prediction steps and negative samples, this run's
        linear phone accuracy beside the paper's), OUTPUT_DIR/table2.json (accuracies as
        fractions, null for a variant without a result, which the table shows as
        "pending"), OUTPUT_DIR/table2_k.png (phone accuracy against K, the paper's beside).

Example:
    python local/make_table2.py --exp-root exp --output-dir exp/table2 \\
        --config conf/cpc_small.yaml --rows k2=cpc_small_1a2b3c k4=cpc_small_4d5e6f ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cpc.cli import HelpFormatter
from cpc.io import atomic_path, write_json_atomic, write_text_atomic
from cpc.log import setup_logging
from cpc.results import PENDING, pct

#: van den Oord et al. (2018), Table 2: LibriSpeech-100 phone classification accuracy (%).
PAPER_K = {"k2": 28.5, "k4": 57.6, "k8": 63.6, "k12": 64.6, "k16": 63.8}
PAPER_NEGATIVES = {
    "mixed_speaker": 64.6,
    "same_speaker": 65.5,
    "mixed_speaker_excl": 57.3,
    "same_speaker_excl": 64.6,
    "current_sequence": 65.2,
}
LABELS = {
    "mixed_speaker": "Mixed speaker",
    "same_speaker": "Same speaker",
    "mixed_speaker_excl": "Mixed speaker (excl.)",
    "same_speaker_excl": "Same speaker (excl.)",
    "current_sequence": "Current sequence only",
}


class Table2Error(ValueError):
    """Bad --rows."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--exp-root", default="exp", help="holds the variants' exp/<tag>/")
    parser.add_argument("--output-dir", default="exp/table2", help="where the table goes")
    parser.add_argument("--config", default="", help="the variants' training config (noted)")
    parser.add_argument("--rows", nargs="+", required=True, help="VARIANT=TAG pairs")
    return parser


def variant_result(exp_root: Path, tag: str) -> dict[str, Any] | None:
    """The linear phone probe of exp/<tag>'s CPC dump: {"accuracy", "steps", ...} or None
    when the variant has not got that far."""
    path = exp_root / tag / "probe_phone" / f"cpc_{tag}" / "results.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    lin = res.get("linear") or {}
    if lin.get("accuracy") is None:
        return None
    return {
        "accuracy": float(lin["accuracy"]),
        "mlp_accuracy": (res.get("mlp") or {}).get("accuracy"),
        "results": str(path),
    }


def make_table2(
    exp_root: Path, output_dir: Path, rows: dict[str, str], config: str = ""
) -> dict[str, Any]:
    """Write TABLE2.md, table2.json and table2_k.png (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unknown = sorted(set(rows) - set(PAPER_K) - set(PAPER_NEGATIVES))
    if unknown:
        raise Table2Error(f"unknown variants {unknown}; use {[*PAPER_K, *PAPER_NEGATIVES]}")
    found = {v: variant_result(exp_root, t) for v, t in rows.items()}

    def cell(v: str) -> str:
        r = found.get(v)
        return pct(r["accuracy"]) if r else PENDING

    def tag(v: str) -> str:
        return f"`{rows[v]}`" if v in rows else "–"

    md = [
        "# Table 2: prediction steps and negative samples",
        "",
        "Linear phone classification accuracy (%) of c_t on the test split (run.sh stage 4), "
        "for CPC trained with each setting; the paper's Table 2 (LibriSpeech-100) beside it. "
        "A variant that has not finished shows pending. Variants differ from the config "
        f"({config or 'see the tags'}) only by their overrides; each is exp/<tag>/.",
        "",
        "| steps predicted | phone linear | paper | exp |",
        "|---|---:|---:|---|",
    ]
    for v, paper in PAPER_K.items():
        md.append(f"| {v[1:]} steps | {cell(v)} | {paper:g} | {tag(v)} |")
    md += ["", "| negative samples (K = 12) | phone linear | paper | exp |", "|---|---:|---:|---|"]
    for v, paper in PAPER_NEGATIVES.items():
        md.append(f"| {LABELS[v]} | {cell(v)} | {paper:g} | {tag(v)} |")
    pending = [v for v in [*PAPER_K, *PAPER_NEGATIVES] if not found.get(v)]
    md += [
        "",
        f"Pending: {', '.join(pending)}." if pending else "Every variant has finished.",
        "",
        "- `table2_k.png`: phone accuracy against the number of steps predicted (K), "
        "this run and the paper.",
    ]

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ks = [int(v[1:]) for v in PAPER_K]
    ax.plot(ks, list(PAPER_K.values()), marker="s", ls="--", label="paper (LibriSpeech-100)")
    done = [(int(v[1:]), 100 * found[v]["accuracy"]) for v in PAPER_K if found.get(v)]
    if done:
        ax.plot(*zip(*done), marker="o", label="this run")
    ax.set_xticks(ks)
    ax.set_xlabel("steps predicted (K)")
    ax.set_ylabel("phone accuracy (%), linear probe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_dir / "table2_k.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    out = {
        "config": config,
        "rows": {
            v: {
                "tag": rows.get(v),
                "accuracy": found[v]["accuracy"] if found.get(v) else None,
                "paper": (PAPER_K | PAPER_NEGATIVES)[v] / 100,
                "detail": found.get(v),
            }
            for v in [*PAPER_K, *PAPER_NEGATIVES]
        },
        "pending": pending,
        "figures": ["table2_k.png"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(output_dir / "table2.json", out)
    write_text_atomic(output_dir / "TABLE2.md", "\n".join(md) + "\n")
    return out


def _parse_rows(pairs: list[str]) -> dict[str, str]:
    rows: dict[str, str] = {}
    for p in pairs:
        v, sep, t = p.partition("=")
        if not sep or not v or not t:
            raise Table2Error(f"--rows: expected VARIANT=TAG, got {p!r}")
        rows[v] = t
    return rows


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        out = make_table2(
            Path(args.exp_root), Path(args.output_dir), _parse_rows(args.rows), args.config
        )
    except (Table2Error, OSError, json.JSONDecodeError) as e:
        logging.error(f"make_table2.py: {e}")
        return 1
    if out["pending"]:
        logging.warning(f"pending: {' '.join(out['pending'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
