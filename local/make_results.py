#!/usr/bin/env python3
"""The results table of an experiment, beside the paper's numbers, for any domain.

Input:  EXP_DIR/probe_<task>/<feature dir>/results.json (local/probe.py), EXP_DIR/metrics.jsonl
        (the trainer's log), and the domain: --domain, else the ``domain`` of
        EXP_DIR/config.yaml (written by local/train.py).
Output: EXP_DIR/RESULTS.md (the table with the paper's numbers beside it, "pending" where a
        probe has not run, chance levels, protocol, figures), EXP_DIR/results.json (rows of
        accuracies as fractions in [0, 1], the paper's numbers, pending rows),
        EXP_DIR/kstep_accuracy.png (InfoNCE accuracy against k, the paper's Figure 3) and the
        domain's figures (speech: tsne_speakers.png, the paper's Figure 2).

Example (from egs/librispeech100):
    python ../../local/make_results.py --exp-dir exp/cpc_small --tag cpc_small
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from cpc.cli import HelpFormatter
from cpc.config import ConfigError
from cpc.domain import available_domains, load_domain
from cpc.log import setup_logging
from cpc.results import ResultsError, make_results, pct


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--exp-dir", required=True, help="the experiment directory exp/<tag>")
    parser.add_argument("--tag", required=True, help="experiment tag (names the dumps)")
    parser.add_argument(
        "--domain",
        default="",
        help=f"the domain ({', '.join(available_domains())}); empty: from EXP_DIR/config.yaml",
    )
    return parser


def _domain_of(exp_dir: Path, name: str) -> str:
    if name:
        return name
    cfg = exp_dir / "config.yaml"
    if not cfg.is_file():
        raise ConfigError(f"{cfg} does not exist; pass --domain or run the training stage first")
    domain = (yaml.safe_load(cfg.read_text()) or {}).get("domain")
    if not domain:
        raise ConfigError(f"{cfg} names no domain; pass --domain")
    return str(domain)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    exp_dir = Path(args.exp_dir)
    try:
        domain = load_domain(_domain_of(exp_dir, args.domain))
        res = make_results(exp_dir, args.tag, domain.results)
    except (ConfigError, ResultsError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    for ftype, row in res["rows"].items():
        status = row.get("status", {})
        cells = ", ".join(
            f"{c.header} {pct(row[c.key], status.get(c.key, 'pending'))}"
            for c in domain.results.columns
        )
        logging.info(f"{ftype}: {cells}")
    logging.info(f"wrote {exp_dir}/RESULTS.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
