#!/usr/bin/env python3
"""Probes on frozen features, for any domain: ``probe.py TASK --feature-dir D --output-dir O``.

Tasks come from the domain packages (cpc/<domain>/domain.py); speech has:
  phone    frame-level phone probes on a 10 ms dump: linear (multinomial logistic
           regression), one hidden layer, and linear on each frame +-N neighbours
  speaker  linear speaker probe, on windows of pooled frames or on single frames

`probe.py TASK --help` lists a task's options. Common to all: features standardised with the
training rows' statistics; probes trained with Adam for a fixed number of epochs (raised to
reach --min-steps updates on small data), seeded, evaluated once on the test rows.

Output: OUTPUT_DIR/results.json (accuracies, per-class accuracy, confusion matrices, chance
levels, counts, timings, and the signature: options + sha256 of the input files), plus
confusion-matrix PNGs. A re-run with the same inputs and options does nothing.

Examples (from egs/librispeech100):
    python ../../local/probe.py phone --feature-dir data/cpc_cpc_small --lang-dir data/lang \\
        --output-dir exp/cpc_small/probe_phone/cpc_cpc_small --seed 42
    python ../../local/probe.py speaker --feature-dir data/mfcc \\
        --output-dir exp/cpc_small/probe_speaker/mfcc --seed 42 --protocol pooled
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from cpc.cli import HelpFormatter
from cpc.domain import available_domains, load_domain
from cpc.log import setup_logging
from cpc.probe_runner import ProbeError, add_common_arguments, run_probe_task


def _tasks() -> dict[str, tuple]:
    """``{task name: (domain, task)}`` over every domain package."""
    out: dict[str, tuple] = {}
    for name in available_domains():
        domain = load_domain(name)
        for task_name, task in domain.probe_tasks.items():
            if task_name in out:
                raise RuntimeError(f"probe task {task_name!r} is defined by two domains")
            out[task_name] = (domain, task)
    return out


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    tasks = _tasks()
    sub = parser.add_subparsers(dest="task", required=True, metavar="{" + ",".join(tasks) + "}")
    for name, (domain, task) in tasks.items():
        p = sub.add_parser(name, help=f"{task.help} ({domain.name})", formatter_class=HelpFormatter)
        add_common_arguments(p)
        task.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(max(1, args.num_threads))
    domain, task = _tasks()[args.task]
    try:
        res = run_probe_task(task, args)
    except (ProbeError, FileNotFoundError, PermissionError, *domain.errors) as e:
        logging.error(str(e))
        return 1
    accs = {k: v["accuracy"] for k, v in res.items() if isinstance(v, dict) and "accuracy" in v}
    summary = ", ".join(f"{k} {a:.4f}" for k, a in accs.items())
    logging.info(f"{args.task} probe on {args.feature_dir}: {summary} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
