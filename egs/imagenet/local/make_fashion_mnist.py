#!/usr/bin/env python3
"""Write the embedded Fashion-MNIST (Debian dataset-fashion-mnist, placed beside the
environment by local/setup_env.sh) as an ImageNet-style tree, once.

Input:  --src, the four IDX .gz files (default: <venv>/share/fashion-mnist). They are checked
        by content (IDX headers, 60,000 / 10,000 images of 28x28, 6,000 / 1,000 per class):
        Debian recompresses them, so the published md5s of the .gz files do not apply.
Output: --out-dir/{train,val}/<index>_<class>/<split>_<n>.png (lossless PNG) and
        source.json (sha256 of the sources, the per-class limits). Deterministic; a finished
        tree of the same sources and limits is kept.

Example (from egs/imagenet):
    python local/make_fashion_mnist.py --out-dir download/fashion_mnist --num-jobs 2
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cpc.cli import HelpFormatter
from cpc.log import setup_logging
from cpc.vision.imagenet import ImageDataError, build_fashion_tree


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--src", default=str(Path(sys.prefix) / "share" / "fashion-mnist"))
    p.add_argument("--out-dir", required=True, help="where the tree is written")
    p.add_argument("--train-per-class", type=int, default=0, help="0: all 6,000 per class")
    p.add_argument("--val-per-class", type=int, default=0, help="0: all 1,000 per class")
    p.add_argument("--num-jobs", type=int, default=1, help="parallel writer processes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        build_fashion_tree(
            args.src, args.out_dir, (args.train_per_class, args.val_per_class), args.num_jobs
        )
    except (ImageDataError, FileNotFoundError) as e:
        logging.error(f"{e} (source: --src {args.src})")
        return 1
    logging.info(f"Fashion-MNIST tree in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
