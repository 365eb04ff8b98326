#!/usr/bin/env python3
"""Stage 0: validate an ILSVRC-2012-style tree and write the manifests.

Input:  --data-dir with train/<wnid>/*.JPEG and val/ (per-class folders, or flat with the
        devkit: --devkit-dir holding data/meta.mat and
        data/ILSVRC2012_validation_ground_truth.txt). Every image is decoded in full.
Output: --output-dir/classes.txt, train.tsv, val.tsv, info.json; bad_<split>.txt when images
        cannot be decoded (the stage then stops, unless --skip-bad true leaves them out).

Example (from egs/imagenet):
    python local/prepare_manifests.py --data-dir /data/ILSVRC2012 --output-dir data/manifests
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpc.cli import HelpFormatter, str2bool
from cpc.log import setup_logging
from cpc.vision.imagenet import ImageDataError, prepare_manifests


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, help="the image tree (train/, val/)")
    p.add_argument("--output-dir", required=True, help="where the manifests go")
    p.add_argument("--devkit-dir", default="", help="ILSVRC2012 devkit (flat val/ only)")
    p.add_argument("--skip-bad", type=str2bool, default=False, help="leave bad images out")
    p.add_argument("--num-jobs", type=int, default=1, help="parallel decoding processes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        prepare_manifests(
            args.data_dir, args.output_dir, args.devkit_dir or None, args.skip_bad, args.num_jobs
        )
    except ImageDataError as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
