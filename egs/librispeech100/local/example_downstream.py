#!/usr/bin/env python3
"""Example: use a stage-3 feature dump downstream, the way an icefall ASR recipe uses fbank.

A dump directory (data/cpc_<tag>, data/mfcc, ...) is an ordinary lhotse cut manifest with
precomputed features, so any lhotse/icefall data pipeline reads it unchanged: point the
recipe's ``--manifest-dir`` at it and read the feature dimension from its info.json instead of
assuming 80. This script shows the pieces: ``load_manifest_lazy`` -> a bucketing sampler ->
``K2SpeechRecognitionDataset(input_strategy=PrecomputedFeatures())`` (no k2 needed) in a
DataLoader, plus ``collate_features`` / ``collate_custom_field`` directly for the frame-level
phone labels that stage 1 attached to every cut. Features and labels have the same number of
10 ms frames, so they line up index by index.

Input:  FEATURE_DIR/librispeech_cuts_<part>.jsonl.gz + info.json (stage 3).
Output: none; logs the shape of each batch (a downstream model would consume it).

Example:
    python local/example_downstream.py --feature-dir data/cpc_cpc_small --part train \\
        --max-duration 200 --num-batches 3
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset
from lhotse.dataset.collation import collate_custom_field, collate_features
from lhotse.dataset.input_strategies import PrecomputedFeatures

from cpc.audio.constants import LABEL_FIELD, PREFIX
from cpc.cli import HelpFormatter
from cpc.features import FeatureDumpError, load_dump, require_info
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--feature-dir", required=True, help="a stage-3 dump (data/<feat>)")
    parser.add_argument("--part", default="train", help="train or test")
    parser.add_argument(
        "--max-duration", type=float, default=200.0, help="seconds of audio per batch"
    )
    parser.add_argument("--num-buckets", type=int, default=10, help="duration buckets")
    parser.add_argument("--num-batches", type=int, default=3, help="batches to show; 0: all")
    parser.add_argument("--seed", type=int, default=42, help="sampler shuffling seed")
    return parser


def make_dataloader(
    cuts: CutSet, max_duration: float, num_buckets: int = 10, seed: int = 42
) -> torch.utils.data.DataLoader:
    """The icefall ``asr_datamodule`` pattern: the sampler yields CutSets, the dataset turns
    each into padded features (``inputs`` (B, T, D)) and supervision metadata."""
    sampler = DynamicBucketingSampler(
        cuts, max_duration=max_duration, shuffle=True, num_buckets=num_buckets, seed=seed
    )
    dataset = K2SpeechRecognitionDataset(input_strategy=PrecomputedFeatures(), return_cuts=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        info = require_info(args.feature_dir)
        cuts = load_dump(args.feature_dir, args.part, PREFIX)
    except (FeatureDumpError, FileNotFoundError) as e:
        logging.error(str(e))
        return 1
    logging.info(
        f"{args.feature_dir}: {info['feature_type']} features, {info['dim']} dims every "
        f"{info['frame_shift'] * 1000:.0f} ms"
    )
    dl = make_dataloader(cuts, args.max_duration, args.num_buckets, args.seed)
    for i, batch in enumerate(dl):
        if args.num_batches and i >= args.num_batches:
            break
        feats = batch["inputs"]  # (B, T, D) float32, zero-padded
        batch_cuts = CutSet.from_cuts(batch["supervisions"]["cut"])
        # The same, without the dataset class: features and phone labels, padded alike.
        feats2, feat_lens = collate_features(batch_cuts)
        labels, label_lens = collate_custom_field(batch_cuts, LABEL_FIELD, pad_value=-100)
        if feats2.shape != feats.shape or not torch.equal(feat_lens, label_lens):
            logging.error(f"batch {i}: features and labels do not line up; re-run stages 1 and 3")
            return 1
        logging.info(
            f"batch {i}: {len(batch_cuts)} cuts, features {tuple(feats.shape)}, "
            f"phone labels {tuple(labels.shape)}, frames {feat_lens.tolist()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
