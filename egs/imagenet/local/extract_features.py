#!/usr/bin/env python3
"""Image-level feature dumps for the linear probes (see cpc/vision/features.py).

Input:  --manifest-dir (stage 0: train.tsv, val.tsv); for cpc/supervised a --checkpoint
        (best.pt of local/train.py), for random a --config and --seed, for pixels
        --pixel-size.
Output: --output-dir/{train,val}.npz (x: features, y: class indices, index: manifest rows)
        and info.json (what produced them). A dump of the same identity is kept.

Examples (from egs/imagenet):
    python local/extract_features.py --feat-type cpc --checkpoint exp/cpc_small/best.pt \\
        --manifest-dir data/manifests --output-dir data/feats/cpc_cpc_small
    python local/extract_features.py --feat-type pixels --pixel-size 28 \\
        --manifest-dir data/manifests --output-dir data/feats/pixels
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from cpc.cli import HelpFormatter
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--feat-type", required=True, choices=("cpc", "supervised", "random", "pixels"))
    p.add_argument("--manifest-dir", required=True, help="stage 0's manifests")
    p.add_argument("--output-dir", required=True, help="the dump directory")
    p.add_argument("--checkpoint", default="", help="cpc/supervised: the model (best.pt)")
    p.add_argument("--config", default="", help="random: the training config")
    p.add_argument("--override", nargs="*", default=[], help="random: config overrides")
    p.add_argument("--seed", type=int, default=42, help="random: the init seed")
    p.add_argument("--pixel-size", type=int, default=28, help="pixels: image side in pixels")
    p.add_argument(
        "--eval-view",
        default="subcrop",
        choices=("subcrop", "whole"),
        help="cpc/supervised/random: the patches the encoder sees: subcrop = each patch's "
        "centre data.subcrop square zero-padded back as in training (the statistics the "
        "encoder was trained on); whole = whole patches",
    )
    p.add_argument(
        "--max-train-images", type=int, default=0, help="train images (fixed subset); 0: all"
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers")
    p.add_argument(
        "--num-threads", type=int, default=2, help="torch threads (the encoder's convolutions)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    setup_logging()
    torch.set_num_threads(max(1, args.num_threads))
    from cpc.checkpoint import CheckpointError, load_checkpoint
    from cpc.config import ConfigError
    from cpc.vision.config import load_train_config
    from cpc.vision.features import dump_features
    from cpc.vision.imagenet import ImageDataError

    try:
        cfg = None
        if args.feat_type in ("cpc", "supervised"):
            if not os.path.isfile(args.checkpoint):
                raise FileNotFoundError(
                    f"checkpoint {args.checkpoint} does not exist; run the training stage first"
                )
            from cpc.config import from_dict
            from cpc.vision.config import VisionTrainConfig, validate_config

            cfg = from_dict(VisionTrainConfig, load_checkpoint(args.checkpoint)["config"])
            validate_config(cfg)
        elif args.feat_type == "random":
            cfg = load_train_config(args.config, args.override)
        info = dump_features(
            args.feat_type,
            args.manifest_dir,
            args.output_dir,
            cfg=cfg,
            checkpoint=args.checkpoint,
            seed=args.seed,
            pixel_size=args.pixel_size,
            max_train_images=args.max_train_images,
            num_workers=args.num_workers,
            batch_size=args.batch_size,
            eval_view=args.eval_view,
        )
    except (ConfigError, CheckpointError, ImageDataError, FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 1
    logging.info(f"{args.output_dir}: {info['counts']} images, {info['dim']} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
