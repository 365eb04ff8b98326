#!/usr/bin/env python3
"""Stage 1 (forced alignment): frame-level phone labels from the transcripts alone.

Trains an aligner on the corpus itself (CMUdict pronunciations, MFCC, a flat-start frame
classifier re-aligned by Viterbi with optional silence between words: rounds on the static
MFCCs, then one on MFCC + deltas + delta-deltas; see
cpc/audio/align.py) and writes the labels in the CPC release format, so that
local/prepare_labels.py reads them like the release's.

Input:  MANIFEST_DIR/librispeech_{recordings,supervisions}_train-clean-100.jsonl.gz (stage 0)
Output: OUTPUT_DIR/converted_aligned_phones.txt, train_split.txt, test_split.txt, phones.txt,
        alignment_stats.json (per-phone durations, OOV words, failed utterances and why,
        per-round log, time per audio hour) and, with --reference-dir,
        alignment_quality.json (frame agreement overall and per phone, boundary errors).

Example:
    python local/align.py --manifest-dir data/manifests --output-dir data/align \\
        --split-dir download/mini_librispeech/labels \\
        --reference-dir download/mini_librispeech/labels
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from cpc.audio.align import AlignConfig, align_corpus
from cpc.audio.librispeech import LIBRISPEECH_PART, DataPrepError
from cpc.cli import HelpFormatter
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    d = AlignConfig()
    parser.add_argument("--manifest-dir", default="data/manifests", help="stage-0 manifests")
    parser.add_argument("--output-dir", default="data/align", help="receives the labels")
    parser.add_argument(
        "--split-dir",
        default=None,
        help="reuse train_split.txt / test_split.txt from here (default: a seeded "
        "per-speaker split)",
    )
    parser.add_argument(
        "--reference-dir",
        default=None,
        help="labels in the CPC release format to measure the alignment against",
    )
    parser.add_argument("--iterations", type=int, default=d.iterations, help="re-align rounds")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="classifier epochs/round")
    parser.add_argument("--min-frames", type=int, default=d.min_frames, help="shortest phone")
    parser.add_argument(
        "--prior-scale",
        type=float,
        default=d.prior_scale,
        help="scores are log posterior - PRIOR_SCALE x log prior (1: scaled likelihoods)",
    )
    parser.add_argument(
        "--deltas",
        type=int,
        choices=[0, 1, 2],
        default=d.deltas,
        help="MFCC delta order of the aligner's features (2: 39 dims, 1: 26, 0: the 13 static)",
    )
    parser.add_argument(
        "--final-deltas",
        type=int,
        choices=[-1, 0, 1, 2],
        default=-1 if d.final_deltas is None else d.final_deltas,
        help="after the rounds, one more round (train, re-align) on MFCCs with this delta order, "
        "which gives the labels (-1: no extra round)",
    )
    parser.add_argument(
        "--targets",
        choices=["hard", "soft"],
        default=d.targets,
        help="the classifier's training targets: hard (the Viterbi path: Viterbi training) or "
        "soft (state occupancies by forward-backward: Baum-Welch training)",
    )
    parser.add_argument(
        "--cmvn",
        choices=["utterance", "speaker"],
        default=d.cmvn,
        help="normalise the MFCC features per utterance or per speaker",
    )
    parser.add_argument(
        "--sil-states",
        type=int,
        default=d.sil_states,
        help="sub-states of a pause (1: one silence class; up to --states: onset ... end)",
    )
    parser.add_argument(
        "--sil-frames",
        type=int,
        default=d.sil_frames,
        help="shortest pause between words, in frames (states of the optional silence)",
    )
    parser.add_argument(
        "--states", type=int, default=d.states, help="sub-phone states per phone (1 or 3)"
    )
    parser.add_argument(
        "--context", type=int, default=d.context, help="spliced frames on each side"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed")
    parser.add_argument("--num-threads", type=int, default=2, help="torch threads")
    parser.add_argument("--part", default=LIBRISPEECH_PART, help="LibriSpeech part")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging()
    torch.set_num_threads(args.num_threads)
    try:
        cfg = make_config(args)
    except ValueError as e:
        parser.error(str(e))  # exit 2, one line, nothing read or written
    try:
        align_corpus(
            args.manifest_dir,
            args.output_dir,
            cfg,
            split_dir=args.split_dir,
            reference_dir=args.reference_dir,
            part=args.part,
        )
    except (DataPrepError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    return 0


def make_config(args: argparse.Namespace) -> AlignConfig:
    """The aligner settings of the command line (ValueError for settings it refuses)."""
    return AlignConfig(
        iterations=args.iterations,
        epochs=args.epochs,
        min_frames=args.min_frames,
        sil_frames=args.sil_frames,
        sil_states=args.sil_states,
        cmvn=args.cmvn,
        targets=args.targets,
        deltas=args.deltas,
        final_deltas=None if args.final_deltas == -1 else args.final_deltas,
        prior_scale=args.prior_scale,
        states=args.states,
        context=args.context,
        seed=args.seed,
    )


if __name__ == "__main__":
    sys.exit(main())
