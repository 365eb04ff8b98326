#!/usr/bin/env python3
"""Stage 4: SentEval-protocol evaluation of sentence features (cpc.text.senteval).

Feature types (cpc.text.features): cpc (the trained encoder of --checkpoint, vocabulary
expansion with --word2vec-dir), random (the same model at its random initialisation: the
checkpoint's config and seed, before any update; expanded the same way), w2v_mean (mean word
vector), bow (bag of words over the model vocabulary).

Inputs: --senteval-dir (SentEval layout; absent tasks are reported "not available"),
--checkpoint (cpc, random), --vocab (data/lang/vocab.txt), --word2vec-dir (stage 2).
Each task is read and tokenised once for all feature types.
Output, per feature type: OUTPUT_DIR/<type>/results.json: per task the accuracy, the folds,
the chosen C (and how many folds chose an end of the --c-grid, with a warning in the log:
there the grid should be widened), class counts, the majority-class rate; the
vocabulary-expansion coverage per task (before/after); the signature (options + sha256 of
the inputs). A re-run with the same signature does nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cpc.cli import HelpFormatter, positive_int
from cpc.io import sha256_file, write_json_atomic
from cpc.log import setup_logging


def _choices(allowed: tuple[str, ...]) -> Any:
    """An argparse ``type``: a comma-separated list of names out of ``allowed``."""

    def parse(v: str) -> list[str]:
        names = [n for n in v.split(",") if n]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, bad)) or 'empty list'}; choose from "
                f"{','.join(allowed)}"
            )
        return names

    return parse


def _c_grid(v: str) -> list[float]:
    """An argparse ``type``: comma-separated positive numbers."""
    try:
        grid = [float(c) for c in v.split(",")]
    except ValueError:
        grid = []
    if not grid or not all(c > 0 for c in grid):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers > 0 (e.g. 0.25,1,4,16), got {v!r}"
        )
    return grid


def _folds(v: str) -> int:
    """An argparse ``type``: a number of folds, >= 2."""
    n = positive_int(v)
    if n < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 folds, got {n}")
    return n


def _non_negative(v: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0: all), got {v!r}")
    return n


def get_parser() -> argparse.ArgumentParser:
    from cpc.text.features import FEATURE_TYPES
    from cpc.text.senteval import DEFAULT_C_GRID, TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument(
        "--feature-types",
        type=_choices(FEATURE_TYPES),
        default=",".join(FEATURE_TYPES),
        help=f"comma-separated, of {', '.join(FEATURE_TYPES)}",
    )
    p.add_argument("--senteval-dir", required=True, help="SentEval data root")
    p.add_argument("--output-dir", required=True, help="receives <type>/results.json")
    p.add_argument("--vocab", required=True, help="data/lang/vocab.txt")
    p.add_argument("--word2vec-dir", required=True, help="stage 2 output (vectors.bin)")
    p.add_argument("--checkpoint", default="", help="best.pt (cpc, random)")
    p.add_argument(
        "--tasks", type=_choices(TASKS), default=",".join(TASKS), help="comma-separated tasks"
    )
    p.add_argument(
        "--cpc-feature",
        default="z",
        choices=["z", "c", "zc"],
        help="encoder output used: z (sentence embedding), c (GRU after it), both",
    )
    p.add_argument("--folds", type=_folds, default=10, help="outer cross-validation folds")
    p.add_argument("--inner-folds", type=_folds, default=5, help="inner folds choosing C")
    p.add_argument(
        "--c-grid",
        type=_c_grid,
        default=",".join(f"{c:g}" for c in DEFAULT_C_GRID),
        help="inverse regularisation strengths tried by the inner CV (powers of 4; below "
        "SentEval's 0.25-16 because the features are standardised)",
    )
    p.add_argument(
        "--max-items",
        type=_non_negative,
        default=0,
        help="per task at most N items (0: all; for tiny test runs)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the folds and the fits")
    p.add_argument("--num-threads", type=positive_int, default=1, help="torch threads for encoding")
    p.add_argument(
        "--num-jobs", type=positive_int, default=2, help="outer folds fitted in parallel processes"
    )
    return p


def _features(args: argparse.Namespace, ftype: str) -> tuple[Any, Any]:
    """A function items -> feature matrix, and the expansion (or None)."""
    import torch

    from cpc.checkpoint import load_checkpoint
    from cpc.config import from_dict
    from cpc.text import features as F
    from cpc.text.config import TextTrainConfig
    from cpc.text.model import build_model
    from cpc.text.vocab import Vocab
    from cpc.text.wordvec import load_word2vec

    vocab = Vocab.load(args.vocab)
    wv = load_word2vec(Path(args.word2vec_dir) / "vectors.bin")
    if ftype == "w2v_mean":
        return (lambda s: F.w2v_mean(wv, s)), None
    if ftype == "bow":
        return (lambda s: F.bag_of_words(vocab, s)), None
    state = load_checkpoint(args.checkpoint)
    cfg = from_dict(TextTrainConfig, state["config"], str(args.checkpoint))
    if cfg.model.init_from_word_vectors:
        recorded = state["identity"]["data"].get("word_vectors")
        if recorded != sha256_file(cfg.model.word_vectors):
            raise ValueError(
                f"{cfg.model.word_vectors} is not the word-vector table {args.checkpoint} "
                "started from (the random-init row needs the same one); re-run stages 2-3"
            )
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)  # the same initial weights as training started from
    if ftype == "cpc":
        model.load_state_dict(state["model"])
    exp = F.expand(model, vocab, wv)
    return (lambda s: F.encoder_features(model, exp, s, args.cpc_feature)), exp


def _plain(v: Any) -> Any:
    """Option values as the command line gave them (lists back to comma-separated text, so
    signatures written before these options were parsed stay equal)."""
    return (
        ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
        if isinstance(v, list)
        else v
    )


def _signature(args: argparse.Namespace, ftype: str) -> dict[str, Any]:
    inputs = [args.vocab, str(Path(args.word2vec_dir) / "vectors.bin")]
    if ftype in ("cpc", "random"):
        inputs.append(args.checkpoint)
    skip = ("output_dir", "num_threads", "num_jobs", "feature_types")
    opts = {k: _plain(v) for k, v in sorted(vars(args).items()) if k not in skip}
    opts["feature_type"] = ftype
    return {"options": opts, "inputs": {p: sha256_file(p) for p in inputs}}


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    import torch

    from cpc.probe_runner import read_results
    from cpc.text.senteval import NOT_AVAILABLE, SentEvalError, evaluate, read_task

    torch.set_num_threads(max(1, args.num_threads))
    grid = args.c_grid
    root = Path(args.senteval_dir)
    todo = {}
    try:
        for ftype in args.feature_types:
            sig = _signature(args, ftype)
            old = read_results(Path(args.output_dir) / ftype)
            if old is not None and old.get("signature") == sig:
                logging.info(f"{args.output_dir}/{ftype}/results.json is up to date, skipping")
            else:
                todo[ftype] = sig
        if not todo:
            return 0
        tasks = {}
        for task in args.tasks:
            t0 = time.time()
            tasks[task] = read_task(root, task, args.max_items)
            if tasks[task] is None:
                logging.info(f"{task}: {NOT_AVAILABLE} (no files under {root})")
            else:
                logging.info(f"{task}: {len(tasks[task].labels)} items ({time.time() - t0:.1f} s)")
        for ftype, sig in todo.items():
            featurize, expansion = _features(args, ftype)
            res: dict[str, Any] = {"feature_type": ftype, "coverage": {}}
            for task, data in tasks.items():
                if data is None:
                    res[task] = {"status": NOT_AVAILABLE}
                    continue
                t0 = time.time()
                x = featurize(data.sentences)
                res["dim"] = int(x.shape[1])
                if expansion is not None:
                    res["coverage"][task] = expansion.coverage(data.sentences)
                r = evaluate(x, data, grid, args.folds, args.inner_folds, args.seed, args.num_jobs)
                r["feature_time_s"] = round(time.time() - t0 - r["time_s"], 1)
                res[task] = r
                logging.info(
                    f"{ftype} {task}: {100 * r['accuracy']:.2f}% ({len(data.labels)} items, "
                    f"majority {100 * r['majority']:.1f}%, {r['time_s']} s)"
                )
                for end, n in r["c_at_grid_edge"].items():
                    if n:
                        c = (min if end == "low" else max)(grid)
                        logging.warning(
                            f"{ftype} {task}: C = {c:g}, the {end} end of --c-grid, in {n} of "
                            f"{len(r['chosen_c'])} fold(s): the best C may lie beyond it; "
                            "widen --c-grid"
                        )
            res["signature"] = sig
            res["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            write_json_atomic(Path(args.output_dir) / ftype / "results.json", res)
    except (SentEvalError, FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
