#!/usr/bin/env python3
"""Stage 6: downstream ASR on stage-3 dumps: a CTC phone recogniser (2-layer BiLSTM) trained
on each dump with identical settings and budget, on 10 %, 30 % and 100 % of the train split
(a learning curve), scored by phone error rate (greedy and beam-search decoding, kaldialign)
on the test split. Data is read the icefall way (lhotse DynamicBucketingSampler +
K2SpeechRecognitionDataset with PrecomputedFeatures); see cpc/audio/asr.py.

Input:  FEATURE_DIR/librispeech_cuts_{train,test}.jsonl.gz + info.json for each --feature-dir
        (stage 3: cuts with features and phone_labels)
Output: OUTPUT_DIR/<feature-dir name>/results.json, frac<f>/model.pt;
        OUTPUT_DIR/results.json (all feature sets) and OUTPUT_DIR/RESULTS.md (the table).

Example:
    python local/train_asr.py --feature-dir data/cpc_cpc_small data/mfcc \\
        --output-dir exp/cpc_small/asr --fractions 0.1 0.3 1.0 --epochs 10
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from cpc.audio.asr import AsrConfig, AsrError, results_table, run_asr
from cpc.cli import HelpFormatter, dataclass_from_args, str2bool
from cpc.features import FeatureDumpError
from cpc.io import write_json_atomic, write_text_atomic
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    d = AsrConfig()
    parser.add_argument("--feature-dir", nargs="+", required=True, help="stage-3 dumps")
    parser.add_argument("--output-dir", required=True, help="receives models and results")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.1, 0.3, 1.0],
        help="shares of the train split to train on (a learning curve)",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=d.min_steps,
        help="train for at least this many updates (more epochs on a small share)",
    )
    parser.add_argument("--hidden", type=int, default=d.hidden, help="LSTM units per direction")
    parser.add_argument("--layers", type=int, default=d.layers, help="BiLSTM layers")
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    parser.add_argument(
        "--max-duration", type=float, default=d.max_duration, help="seconds of audio per batch"
    )
    parser.add_argument("--beam", type=int, default=d.beam, help="beam-search width")
    parser.add_argument(
        "--words",
        type=str2bool,
        default=d.words,
        help="also decode words (CMUdict prefix tree + word bigram of the train transcripts): WER",
    )
    parser.add_argument(
        "--lm-weight", type=float, default=d.lm_weight, help="word decoding: bigram weight"
    )
    parser.add_argument(
        "--word-bonus", type=float, default=d.word_bonus, help="word decoding: score per word"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.num_threads)
    cfg = dataclass_from_args(AsrConfig, args)
    out = Path(args.output_dir)
    results = {}
    try:
        for d in args.feature_dir:
            name = Path(d).name
            results[name] = run_asr(d, out / name, tuple(args.fractions), cfg)
    except (AsrError, FeatureDumpError) as e:
        logging.error(str(e))
        return 1
    write_json_atomic(out / "results.json", results)
    text = [
        "# Downstream ASR: CTC phone recogniser on the feature dumps",
        "",
        f"Phone error rate (%) on the test split, greedy / beam {cfg.beam}"
        + ("; word error rate (%) of lexicon-constrained decoding" if cfg.words else "")
        + f". Training on a share of the train split ({cfg.layers}-layer BiLSTM, "
        f"{cfg.hidden} units, {cfg.epochs} epochs and at least {cfg.min_steps} updates of "
        f"{cfg.max_duration:g} s batches, the same for every feature set).",
        "",
        *results_table(results),
        "",
    ]
    write_text_atomic(out / "RESULTS.md", "\n".join(text))
    logging.info(f"ASR results: {out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
