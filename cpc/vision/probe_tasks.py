"""The vision probe task ``image_class``: linear classification of frozen, mean-pooled image
features (a dump of :mod:`cpc.vision.features`), as the paper's linear evaluation.

The probe is a linear layer on the standardised features, trained with SGD (momentum 0.9)
and the paper's step schedule: the learning rate 0.1, then 0.01 and 0.001 after 50/85 and
75/85 of the updates (the paper: 50k, 25k and 10k updates of 2048 images, about 136 epochs of
ImageNet, the default here). Reported: top-1 and top-5 accuracy on val, per-class accuracy,
the confusion matrix.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from cpc.probe_runner import ProbeError, ProbeSet
from cpc.probes import ProbeConfig, ProbeData


class ImageClassTask:
    name = "image_class"
    help = "linear image classification on mean-pooled features (top-1, top-5)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--classes", required=True, help="classes.txt of stage 0 (class names)")
        p.add_argument(
            "--epochs", type=int, default=136, help="epochs (the paper: 85k updates x 2048)"
        )
        p.add_argument(
            "--optimizer",
            choices=("sgd", "adam"),
            default="sgd",
            help="sgd: momentum 0.9 and the step schedule (the paper); adam: cosine decay",
        )
        p.add_argument("--top-k", type=int, default=5, help="also report top-k accuracy")
        p.set_defaults(lr=0.1)  # the paper's initial rate (SGD)

    def inputs(self, args: argparse.Namespace) -> list[Path]:
        d = Path(args.feature_dir)
        files = [d / "train.npz", d / "val.npz", d / "info.json", Path(args.classes)]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f} does not exist; run the feature stage first")
        return files

    def load(self, args: argparse.Namespace, probe: ProbeConfig) -> ProbeSet:
        d = Path(args.feature_dir)
        names = [
            line.split(maxsplit=1)[1]
            for line in Path(args.classes).read_text().splitlines()
            if line.strip()
        ]
        info = json.loads((d / "info.json").read_text())
        parts = {}
        for split in ("train", "val"):
            with np.load(d / f"{split}.npz") as z:
                x, y = z["x"], z["y"]
            if len(y) and (y.min() < 0 or y.max() >= len(names)):
                raise ProbeError(
                    f"{d / split}.npz: labels {y.min()}..{y.max()} outside the "
                    f"{len(names)} classes of {args.classes}; redo the feature stage"
                )
            parts[split] = ProbeData.from_numpy(x, y)
        cfg = replace(
            probe,
            epochs=args.epochs,
            optimizer=args.optimizer,
            schedule="step" if args.optimizer == "sgd" else "cosine",
            momentum=0.9,
            top_k=args.top_k,
        )
        return ProbeSet(
            train=parts["train"],
            test=parts["val"],
            class_names=names,
            probes={"linear": cfg},
            info={"feature_type": info["feature_type"], "dim": info["dim"]},
            keep_confusion=len(names) <= 100,  # ImageNet's 1000 x 1000: per-class accuracy only
            confusion_plots=("linear",) if len(names) <= 100 else (),
        )


TASKS = {"image_class": ImageClassTask()}
