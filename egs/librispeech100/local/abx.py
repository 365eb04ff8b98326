#!/usr/bin/env python3
"""Stage 7: triphone ABX error (Libri-light / ZeroSpeech protocol, within context) within and
across speakers, on the test split of stage-3 dumps, with the stage-1 phone labels giving the
triphones; DTW with the angular frame distance; a seeded sample capped at --max-triplets per
mode. See cpc/audio/abx.py.

Input:  FEATURE_DIR/librispeech_cuts_test.jsonl.gz (+ info.json) for each --feature-dir
Output: OUTPUT_DIR/results.json (per dump: within/across error, triplets, cells, time) and
        OUTPUT_DIR/RESULTS.md (the table).

Example:
    python local/abx.py --feature-dir data/cpc_cpc_small data/mfcc \\
        --output-dir exp/cpc_small/abx --max-triplets 100000
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cpc.audio.abx import AbxConfig, abx_scores
from cpc.audio.asr import AsrError, load_asr_cuts
from cpc.audio.constants import LABEL_FIELD
from cpc.cli import HelpFormatter, dataclass_from_args
from cpc.features import FeatureDumpError
from cpc.io import write_json_atomic, write_text_atomic
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    d = AbxConfig()
    parser.add_argument("--feature-dir", nargs="+", required=True, help="stage-3 dumps")
    parser.add_argument("--output-dir", required=True, help="receives results.json, RESULTS.md")
    parser.add_argument("--part", default="test", help="split to score")
    parser.add_argument(
        "--max-triplets", type=int, default=d.max_triplets, help="triplets per mode at most"
    )
    parser.add_argument(
        "--max-per-cell", type=int, default=d.max_per_cell, help="triplets per cell at most"
    )
    parser.add_argument(
        "--max-frames", type=int, default=d.max_frames, help="longest triphone item (frames)"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="sampling seed")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.num_threads)
    cfg = dataclass_from_args(AbxConfig, args)
    results = {}
    try:
        for d in args.feature_dir:
            cuts, _ = load_asr_cuts(d, args.part)
            utts = [
                (
                    np.asarray(c.load_features()),
                    np.asarray(c.load_custom(LABEL_FIELD)),
                    str(c.supervisions[0].speaker if c.supervisions else c.id),
                )
                for c in tqdm(cuts, desc=f"Loading {d}", unit=" cuts")
            ]
            logging.info(f"ABX on {d} ({args.part})")
            results[Path(d).name] = abx_scores(utts, cfg)
    except (AsrError, FeatureDumpError) as e:
        logging.error(str(e))
        return 1
    out = Path(args.output_dir)
    write_json_atomic(out / "results.json", results)
    lines = [
        "# Triphone ABX error (%), within context",
        "",
        f"Split: {args.part}; DTW, angular distance; at most {cfg.max_triplets} triplets per mode "
        f"(seed {cfg.seed}).",
        "",
        "| features | within speaker | across speaker | triplets (within / across) |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        w, a = r["within"], r["across"]
        fmt = lambda e: "no triplets" if e is None else f"{100 * e:.2f}"  # noqa: E731
        lines.append(
            f"| {name} | {fmt(w['error'])} | {fmt(a['error'])} | "
            f"{w['triplets']} / {a['triplets']} |"
        )
    if any(r[m]["triplets"] == 0 for r in results.values() for m in ("within", "across")):
        lines += [
            "",
            "no triplets: the split holds no triphone minimal pair (same context, another "
            "centre phone) for that mode, e.g. too few utterances per speaker; score a larger "
            "split (--part).",
        ]
    write_text_atomic(out / "RESULTS.md", "\n".join(lines) + "\n")
    logging.info(f"ABX results: {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
