#!/usr/bin/env python3
"""Stage 4: learning curves and the results table (cpc.rl.results).

Input:  --exp-dir exp/<tag>: <agent>_seed<N>/ (training runs), eval/*.json (stage 3),
        env_check.json (stage 0).
Output: exp/<tag>/curves.png (return vs frames, both agents, mean and min-max band over
        seeds), exp/<tag>/RESULTS.md and results.json (returns of the random, baseline and CPC
        agents per seed, mean and std over seeds, verdicts).

Example (from egs/dmlab):
    python local/make_results.py --exp-dir exp/vizdoom --tag vizdoom
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    from cpc.cli import HelpFormatter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--exp-dir", required=True, help="the experiment directory exp/<tag>")
    p.add_argument("--tag", required=True, help="experiment tag (the table's title)")
    p.add_argument(
        "--seeds", type=int, nargs="*", default=None, help="training seeds (default: all runs)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    from cpc.checkpoint import CheckpointError
    from cpc.log import setup_logging
    from cpc.rl.results import make_results

    setup_logging()
    try:
        res = make_results(Path(args.exp_dir), args.tag, args.seeds)
    except (FileNotFoundError, CheckpointError) as e:
        logging.error(str(e))
        return 1
    for v in res["verdicts"]:
        logging.info(v)
    logging.info(f"wrote {args.exp_dir}/RESULTS.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
