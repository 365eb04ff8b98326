"""Running a probe task end to end: the part of ``local/probe.py`` that no domain changes.

A domain describes each probe task (e.g. speech: ``phone``, ``speaker``; images: ``class``)
with a :class:`ProbeTask`: its command-line options, the files its result depends on, and
how to load the train/test rows (:class:`ProbeSet`). :func:`run_probe_task` then

1. skips the work when ``OUTPUT_DIR/results.json`` was made from the same options and the
   same input files (their sha256), unless ``--force``;
2. standardises the features with the training rows' statistics;
3. trains every probe of the set (:func:`cpc.probes.train_probe`: linear, MLP, with context
   ...), seeded, and evaluates each once on the test rows;
4. writes ``results.json`` atomically (accuracies, per-class accuracy, confusion matrices,
   chance levels, counts, timings, the signature) and confusion-matrix PNGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import torch

from cpc.cli import str2bool
from cpc.io import Pathlike, sha256_file, write_json_atomic
from cpc.perf import PRECISIONS, resolve_precision, warn_if_emulated
from cpc.probes import ProbeConfig, ProbeData, majority_chance, standardize, train_probe

#: Options that change how fast a probe runs, not what it computes.
_NOT_IN_SIGNATURE = ("output_dir", "force", "device", "num_threads", "task", "func")


class ProbeError(ValueError):
    """Inputs a probe cannot use (the message names the file and the fix)."""


@dataclass
class ProbeSet:
    """What a task loads: train/test rows, class names, the probes to train (name ->
    config), extra fields for results.json, and which probes get a confusion PNG."""

    train: ProbeData
    test: ProbeData
    class_names: list[str]
    probes: dict[str, ProbeConfig]
    info: dict[str, Any] = field(default_factory=dict)
    confusion_plots: Sequence[str] = ("linear",)
    keep_confusion: bool = True  # False: leave the matrix out of results.json (many classes)


class ProbeTask(Protocol):
    """One probe task of a domain."""

    name: str
    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the task's own options (the common ones are added by the runner)."""
        ...

    def inputs(self, args: argparse.Namespace) -> list[Path]:
        """The files the result depends on (hashed into the signature); missing ones raise
        FileNotFoundError naming the stage that writes them."""
        ...

    def load(self, args: argparse.Namespace, probe: ProbeConfig) -> ProbeSet:
        """Load the rows; ``probe`` holds the common options (seed, lr, batch ...)."""
        ...


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options every probe task takes."""
    p.add_argument("--feature-dir", required=True, help="a feature dump (data/<feat>)")
    p.add_argument("--output-dir", required=True, help="receives results.json (+ PNGs)")
    p.add_argument("--seed", type=int, default=42, help="seed of the probe training")
    p.add_argument("--batch-size", type=int, default=1024, help="minibatch size")
    p.add_argument(
        "--lr", type=float, default=1e-2, help="Adam learning rate of linear probes (cosine)"
    )
    p.add_argument(
        "--min-steps",
        type=int,
        default=5000,
        help="linear probes train for at least this many updates (more epochs on small "
        "data), so that they converge like a full-batch logistic regression",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="bf16: the probes' matrix products under bfloat16 autocast (weights, optimiser "
        "and loss stay float32); about twice as fast on CPUs with bf16 instructions, "
        "accuracies within a fraction of a point of fp32, but several times slower on CPUs "
        "without them; auto: bf16 where the device has native bf16, else fp32 (the one used "
        "is recorded in results.json)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="CPU threads; more only help on idle cores (on a busy machine OpenMP threads "
        "wait for each other and a probe runs several times slower)",
    )
    p.add_argument(
        "--force", type=str2bool, default=False, help="re-run even if results.json matches"
    )


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names unchanged."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def base_config(args: argparse.Namespace) -> ProbeConfig:
    """The probe options common to all tasks, from the parsed command line."""
    return ProbeConfig(
        batch_size=args.batch_size,
        lr=args.lr,
        min_steps=args.min_steps,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=resolve_device(args.device),
        precision=args.precision,
    )


def signature(task: ProbeTask, args: argparse.Namespace) -> dict[str, Any]:
    """Options and input-file hashes that define a task's result."""
    opts = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_IN_SIGNATURE}
    files = {str(p): sha256_file(p) for p in task.inputs(args)}
    return {"task": task.name, "options": opts, "inputs": files}


def read_results(out_dir: Pathlike) -> dict[str, Any] | None:
    """``results.json`` of a probe output directory, or None."""
    p = Path(out_dir) / "results.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def run_probe_task(task: ProbeTask, args: argparse.Namespace) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; returns the results dict."""
    from cpc.plots import confusion_png

    out_dir = Path(args.output_dir)
    if args.precision == "auto":  # the precision used is part of the signature
        args = argparse.Namespace(**vars(args))
        args.precision = resolve_precision("auto", resolve_device(args.device))
        logging.info(f"precision auto: {args.precision} on this machine")
    warn_if_emulated(args.precision, resolve_device(args.device), "--precision")
    sig = signature(task, args)
    old = read_results(out_dir)
    if not args.force and old is not None and old.get("signature") == sig:
        logging.info(f"{out_dir}/results.json is up to date, skipping")
        return old
    t0 = time.time()
    ps = task.load(args, base_config(args))
    standardize(ps.train.x, ps.test.x)
    names = ps.class_names
    results: dict[str, Any] = {
        "task": task.name,
        "feature_dir": str(args.feature_dir),
        **ps.info,
        "num_classes": len(names),
        "classes": names,
        "num_train": len(ps.train),
        "num_test": len(ps.test),
        "chance": {
            "majority": majority_chance(ps.train.y, ps.test.y),
            "majority_class": names[int(torch.bincount(ps.train.y).argmax())],
            "uniform": 1.0 / len(names),
        },
        "load_time_s": round(time.time() - t0, 2),
    }
    logging.info(
        f"{args.feature_dir}: {len(ps.train)} train / {len(ps.test)} test rows, "
        f"{ps.train.x.shape[1]} dims, {len(names)} classes (loaded in {results['load_time_s']} s)"
    )
    for name, cfg in ps.probes.items():
        r = train_probe(ps.train, ps.test, len(names), cfg)
        results[name] = r.to_dict(names)
        if not ps.keep_confusion:
            results[name].pop("confusion")
        logging.info(
            f"{task.name} {name}: test accuracy {r.accuracy:.4f} (train {r.train_accuracy:.4f}), "
            f"{r.time_per_epoch_s:.2f} s/epoch, {r.time_s:.1f} s"
        )
        if name in ps.confusion_plots:
            confusion_png(
                r.confusion,
                names,
                out_dir / f"confusion_{name}.png",
                title=f"{ps.info.get('feature_type', '')} {name} probe: "
                f"{100 * r.accuracy:.1f}% correct",
            )
    results["signature"] = sig
    results["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(out_dir / "results.json", results)
    return results
