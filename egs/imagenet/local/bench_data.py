#!/usr/bin/env python3
"""Data-rate benchmark: images/s that one core decodes and augments into patch grids, beside
the images/s that training consumed (from an experiment's metrics.jsonl), and the number of
data-loading cores training needs.

Input:  --manifest-dir (stage 0), --config (the sizes of the views), --exp-dir (optional: a
        training run; its metrics.jsonl gives steps/s, its config.yaml the batch size).
Output: a report on the log and --output JSON: ``decode_augment_images_per_s_per_core``,
        ``train_images_per_s`` (per process), ``cores_needed`` (per training process).
Decoding runs in this process on one thread (the rate of one DataLoader worker).
--synthetic-jpeg WxH benchmarks on random-noise JPEGs of that size (e.g. 500x375, a typical
ImageNet image) instead of the manifest's images: the paper's sizes without ImageNet.

Example (from egs/imagenet):
    python local/bench_data.py --manifest-dir data/manifests --config conf/cpc_small.yaml \\
        --exp-dir exp/cpc_small --output exp/cpc_small/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from cpc.cli import HelpFormatter
from cpc.io import write_json_atomic
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--manifest-dir", required=True, help="stage 0's manifests")
    p.add_argument("--config", required=True, help="training config (view sizes)")
    p.add_argument("--exp-dir", default="", help="a training run to compare with")
    p.add_argument("--images", type=int, default=500, help="images to decode and augment")
    p.add_argument("--output", default="", help="JSON report")
    p.add_argument("--synthetic-jpeg", default="", help="WxH: benchmark on generated JPEGs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(1)
    from cpc.config import ConfigError
    from cpc.vision.imagenet import ImageDataError

    try:
        return bench(args)
    except (ConfigError, ImageDataError, FileNotFoundError) as e:
        logging.error(str(e))
        return 1


def bench(args: argparse.Namespace) -> int:
    from cpc.vision.config import load_train_config
    from cpc.vision.data import image_seed
    from cpc.vision.imagenet import read_manifest
    from cpc.vision.patches import open_image, train_patches

    cfg = load_train_config(args.config)
    if args.synthetic_jpeg:
        import tempfile

        from PIL import Image

        w, h = (int(v) for v in args.synthetic_jpeg.split("x"))
        tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(0)
        paths = []
        for n in range(min(args.images, 50)):
            paths.append(f"{tmp.name}/{n}.JPEG")
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(paths[-1], quality=90)
        paths = [paths[n % len(paths)] for n in range(args.images)]
    else:
        if not Path(args.manifest_dir).is_dir():
            raise FileNotFoundError(
                f"--manifest-dir {args.manifest_dir} does not exist; run stage 0 first "
                "(./run.sh --stage 0 --stop-stage 0), or pass --synthetic-jpeg WxH"
            )
        man = read_manifest(Path(args.manifest_dir) / "train.tsv")
        idx = np.random.default_rng(0).permutation(len(man))[: args.images]
        paths = [man.full_path(int(i)) for i in idx]
    gen = torch.Generator()
    t0 = time.perf_counter()
    for n, path in enumerate(paths):
        gen.manual_seed(image_seed(0, 0, n))
        train_patches(open_image(path, cfg.data.greyscale), cfg.data, gen)
    rate = len(paths) / (time.perf_counter() - t0)
    report = {
        "decode_augment_images_per_s_per_core": round(rate, 1),
        "images": len(paths),
        "source": args.synthetic_jpeg or "manifest",
        "config": args.config,
    }
    logging.info(f"decode + augment + patch grid: {rate:.0f} images/s on one core")
    metrics = Path(args.exp_dir) / "metrics.jsonl" if args.exp_dir else None
    if metrics is not None and metrics.is_file():
        bs = yaml.safe_load((Path(args.exp_dir) / "config.yaml").read_text())["data"]["batch_size"]
        steps = [
            json.loads(x)["steps_per_sec"]
            for x in metrics.read_text().splitlines()
            if '"train"' in x and json.loads(x).get("steps_per_sec")
        ]
        if steps:
            train_rate = float(np.median(steps)) * bs
            report["train_images_per_s"] = round(train_rate, 1)
            report["cores_needed"] = round(train_rate / rate, 3)
            logging.info(
                f"training consumed {train_rate:.1f} images/s per process (median over "
                f"{len(steps)} logs): {train_rate / rate:.3f} data-loading cores per process"
            )
    if args.output:
        write_json_atomic(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
