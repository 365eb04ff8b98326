#!/usr/bin/env python3
"""Stages 4 and 5: phone and speaker probes on a 10 ms feature dump.

phone:   frame-level phone classification (41 classes) from the dump's features.
    Input:  FEATURE_DIR/librispeech_cuts_{train,test}.jsonl.gz + info.json (stage 3; the cuts
            carry phone_labels from stage 1), LANG_DIR/phones.txt.
    Output: OUTPUT_DIR/results.json: frame accuracy of a linear probe (multinomial logistic
            regression), of a one-hidden-layer MLP and of a linear probe on +-CONTEXT frames
            (c_t concatenated with its neighbours), per-phone accuracy, confusion matrices,
            chance levels, frame counts, timings; OUTPUT_DIR/confusion_{linear,mlp}.png.
speaker: speaker classification with a linear probe.
    Input:  FEATURE_DIR (stage 3).
    Output: OUTPUT_DIR/results.json (accuracy, chance levels, counts, timings).
    --protocol pooled (default; the CPC_audio / Greedy InfoMax protocol): one example per
    128-frame (20480-sample) window, the mean of its frames; frame: one example per frame.
    --holdout-chapters false: the stage-1 train/test split (by utterance, every speaker in
    both). true: for every speaker one whole chapter is the test set and its other chapters
    the training set, so a chapter's recording channel cannot carry the speaker's identity
    (speakers with a single chapter are left out and counted).

Features are standardised with the training set's statistics; probes train with Adam for a
fixed number of epochs (seeded) and are evaluated once on the test set. A re-run with the
same feature dump and options does nothing.

Examples:
    python local/probe.py phone --feature-dir data/cpc_cpc_small --lang-dir data/lang \\
        --output-dir exp/cpc_small/probe_phone/cpc_cpc_small --seed 42
    python local/probe.py speaker --feature-dir data/mfcc \\
        --output-dir exp/cpc_small/probe_speaker/mfcc --seed 42 --protocol pooled
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpc.audio.librispeech import DataPrepError
from cpc.cli import HelpFormatter, str2bool
from cpc.features import (
    FeatureDumpError,
    collect_frames,
    load_dump,
    num_frames_of,
    require_info,
    sha256_file,
)
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.probes import (
    ProbeConfig,
    ProbeData,
    holdout_group_split,
    majority_chance,
    pool_windows,
    standardize,
    train_probe,
)

LABEL_FIELD = "phone_labels"


class ProbeError(ValueError):
    """Inputs a probe cannot use (the message names the file and the fix)."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True, metavar="{phone,speaker}")
    fmt = HelpFormatter

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--feature-dir", required=True, help="a stage-3 dump (data/<feat>)")
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
        p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
        p.add_argument(
            "--num-threads",
            type=int,
            default=1,
            help="CPU threads; more only help on idle cores (on a busy machine OpenMP threads "
            "wait for each other and a probe runs several times slower)",
        )
        p.add_argument(
            "--max-train-frames",
            type=int,
            default=0,
            help="use a seeded random subset of training utterances with at most this many "
            "frames (bounds memory on the full corpus); 0: all",
        )
        p.add_argument(
            "--force", type=str2bool, default=False, help="re-run even if results.json matches"
        )

    ph = sub.add_parser("phone", help="frame-level phone probe", formatter_class=fmt)
    common(ph)
    ph.add_argument("--lang-dir", default="data/lang", help="holds phones.txt")
    ph.add_argument("--linear-epochs", type=int, default=20, help="epochs of the linear probe")
    ph.add_argument("--mlp-epochs", type=int, default=10, help="epochs of the MLP probe")
    ph.add_argument("--mlp-hidden", type=int, default=512, help="hidden units of the MLP")
    ph.add_argument("--mlp-lr", type=float, default=2e-3, help="Adam learning rate of the MLP")
    ph.add_argument(
        "--context-frames",
        type=int,
        default=2,
        help="also a linear probe on each frame with +-N neighbours concatenated; 0: skip",
    )

    sp = sub.add_parser("speaker", help="speaker probe (linear)", formatter_class=fmt)
    common(sp)
    sp.add_argument(
        "--protocol",
        choices=["pooled", "frame"],
        default="pooled",
        help="pooled: mean over WINDOW-frame windows; frame: every 10 ms frame",
    )
    sp.add_argument(
        "--window", type=int, default=128, help="frames per pooled window (128 = 20480 samples)"
    )
    sp.add_argument(
        "--holdout-chapters",
        type=str2bool,
        default=False,
        help="true: test on one held-out chapter per speaker; false: the stage-1 split",
    )
    sp.add_argument("--epochs", type=int, default=20, help="training epochs (see --min-steps)")
    return parser


# --------------------------------------------------------------------------- helpers


def _signature(args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    opts = {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in ("output_dir", "force", "device", "num_threads")
    }
    info_path = Path(args.feature_dir) / "info.json"
    return {"options": opts, "feature_info_sha256": sha256_file(info_path), **extra}


def _up_to_date(out_dir: Path, signature: dict[str, Any]) -> bool:
    p = out_dir / "results.json"
    if not p.is_file():
        return False
    try:
        with open(p) as f:
            return json.load(f).get("signature") == signature
    except (OSError, json.JSONDecodeError):
        return False


def _subsample(cuts: list, max_frames: int, seed: int) -> list:
    if max_frames <= 0:
        return cuts
    rng = np.random.default_rng(seed)
    out, total = [], 0
    for i in rng.permutation(len(cuts)):
        n = num_frames_of(cuts[i])
        if total + n > max_frames and out:
            break
        out.append(cuts[i])
        total += n
    logging.info(f"using {len(out)} of {len(cuts)} training utterances ({total} frames)")
    return sorted(out, key=lambda c: c.id)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _phone_labels(cut: Any, n: int) -> np.ndarray:
    if not cut.has_custom(LABEL_FIELD):
        raise ProbeError(
            f"utterance {cut.id} has no {LABEL_FIELD}; the dump must be made from the stage-1 "
            "cuts (data/manifests/librispeech_cuts_*.jsonl.gz); re-run stages 1 and 3"
        )
    return cut.load_phone_labels()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- phone


def run_phone(args: argparse.Namespace) -> dict[str, Any]:
    from cpc.audio.labels import read_phones
    from cpc.plots import confusion_png

    out_dir = Path(args.output_dir)
    info = require_info(args.feature_dir)
    phones_txt = Path(args.lang_dir) / "phones.txt"
    if not phones_txt.is_file():
        raise FileNotFoundError(f"{phones_txt} does not exist; run stage 1 first")
    sig = _signature(args, {"phones_sha256": sha256_file(phones_txt)})
    if not args.force and _up_to_date(out_dir, sig):
        logging.info(f"{out_dir}/results.json is up to date, skipping")
        return json.loads((out_dir / "results.json").read_text())
    names = read_phones(phones_txt)
    num_classes = len(names)
    t0 = time.time()
    train_cuts = _subsample(
        list(load_dump(args.feature_dir, "train")), args.max_train_frames, args.seed
    )
    x_tr, y_tr, off_tr, _ = collect_frames(train_cuts, _phone_labels, desc="train frames")
    x_te, y_te, off_te, _ = collect_frames(
        load_dump(args.feature_dir, "test"), _phone_labels, desc="test frames"
    )
    for split, y in (("train", y_tr), ("test", y_te)):
        if y.min() < 0 or y.max() >= num_classes:
            raise ProbeError(
                f"{split} labels span {y.min()}..{y.max()} but {phones_txt} has {num_classes} "
                "classes; the labels and the phone table come from different stage-1 runs"
            )
    train = ProbeData.from_numpy(x_tr, y_tr, off_tr)
    test = ProbeData.from_numpy(x_te, y_te, off_te)
    del x_tr, x_te
    standardize(train.x, test.x)
    load_time = time.time() - t0
    logging.info(
        f"{args.feature_dir}: {len(train)} train / {len(test)} test frames, "
        f"{train.x.shape[1]} dims (loaded in {load_time:.1f} s)"
    )
    device = _device(args.device)
    base = dict(
        batch_size=args.batch_size, weight_decay=args.weight_decay, seed=args.seed, device=device
    )
    linear = dict(epochs=args.linear_epochs, lr=args.lr, min_steps=args.min_steps, **base)
    probes = {
        "linear": ProbeConfig(**linear),
        "mlp": ProbeConfig(
            epochs=args.mlp_epochs, lr=args.mlp_lr, hidden_dim=args.mlp_hidden, **base
        ),
    }
    if args.context_frames > 0:
        probes["linear_context"] = ProbeConfig(context=args.context_frames, **linear)
    counts = np.bincount(y_tr, minlength=num_classes)
    results: dict[str, Any] = {
        "task": "phone",
        "feature_dir": str(args.feature_dir),
        "feature_type": info.get("feature_type"),
        "dim": info.get("dim"),
        "num_classes": num_classes,
        "classes": names,
        "num_train_frames": len(train),
        "num_test_frames": len(test),
        "num_train_utts": len(off_tr) - 1,
        "num_test_utts": len(off_te) - 1,
        "chance": {
            "majority": majority_chance(train.y, test.y),
            "majority_class": names[int(counts.argmax())],
            "uniform": 1.0 / num_classes,
        },
        "load_time_s": round(load_time, 2),
    }
    for name, cfg in probes.items():
        r = train_probe(train, test, num_classes, cfg)
        results[name] = r.to_dict(names)
        logging.info(
            f"phone {name}: test accuracy {r.accuracy:.4f} (train {r.train_accuracy:.4f}), "
            f"{r.time_per_epoch_s:.2f} s/epoch, {r.time_s:.1f} s"
        )
        if name in ("linear", "mlp"):
            confusion_png(
                r.confusion,
                names,
                out_dir / f"confusion_{name}.png",
                title=f"{info.get('feature_type')} {name} probe: {100 * r.accuracy:.1f}% frames",
            )
    results["signature"] = sig
    results["created"] = _now()
    write_json_atomic(out_dir / "results.json", results)
    return results


# --------------------------------------------------------------------------- speaker


def _speaker_examples(
    cuts: Sequence[Any], protocol: str, window: int, desc: str
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Examples (rows), the speaker of each row, the utterance index of each row, offsets."""
    cuts = list(cuts)
    x, _, offsets, _ = collect_frames(cuts, None, desc=desc)
    speakers = [c.supervisions[0].speaker for c in cuts]
    if protocol == "pooled":
        rows, seq = pool_windows(x, offsets, window)
    else:
        rows = x
        seq = np.repeat(np.arange(len(cuts)), np.diff(offsets))
    return rows, [speakers[u] for u in seq], seq, offsets


def run_speaker(args: argparse.Namespace) -> dict[str, Any]:
    out_dir = Path(args.output_dir)
    info = require_info(args.feature_dir)
    sig = _signature(args, {})
    if not args.force and _up_to_date(out_dir, sig):
        logging.info(f"{out_dir}/results.json is up to date, skipping")
        return json.loads((out_dir / "results.json").read_text())
    t0 = time.time()
    train_cuts = list(load_dump(args.feature_dir, "train"))
    test_cuts = list(load_dump(args.feature_dir, "test"))
    dropped: list[str] = []
    if args.holdout_chapters:
        all_cuts = sorted(train_cuts + test_cuts, key=lambda c: c.id)
        spk = [c.supervisions[0].speaker for c in all_cuts]
        chap = [c.id.split("-")[1] for c in all_cuts]
        is_test, dropped = holdout_group_split(spk, chap, args.seed)
        keep_spk = set(spk) - set(dropped)
        train_cuts = [c for c, t, s in zip(all_cuts, is_test, spk) if not t and s in keep_spk]
        test_cuts = [c for c, t, s in zip(all_cuts, is_test, spk) if t and s in keep_spk]
        if dropped:
            logging.warning(
                f"{len(dropped)} speaker(s) with a single chapter left out of the "
                f"held-out-chapter probe: {', '.join(dropped[:10])}"
                + (" ..." if len(dropped) > 10 else "")
            )
        if not test_cuts:
            raise ProbeError(
                f"{args.feature_dir}: no speaker has two chapters, so no chapter can be held "
                "out; use --holdout-chapters false"
            )
    train_cuts = _subsample(train_cuts, args.max_train_frames, args.seed)
    x_tr, spk_tr, _, _ = _speaker_examples(train_cuts, args.protocol, args.window, "train")
    x_te, spk_te, _, _ = _speaker_examples(test_cuts, args.protocol, args.window, "test")
    classes = sorted(set(spk_tr))
    index = {s: i for i, s in enumerate(classes)}
    unseen = sorted(set(spk_te) - set(classes))
    if unseen:
        logging.warning(f"test speakers absent from training, left out: {unseen[:10]}")
        keep = np.array([s in index for s in spk_te])
        x_te = x_te[keep]
        spk_te = [s for s in spk_te if s in index]
    y_tr = np.array([index[s] for s in spk_tr], dtype=np.int64)
    y_te = np.array([index[s] for s in spk_te], dtype=np.int64)
    train = ProbeData.from_numpy(x_tr, y_tr)
    test = ProbeData.from_numpy(x_te, y_te)
    standardize(train.x, test.x)
    load_time = time.time() - t0
    cfg = ProbeConfig(
        epochs=args.epochs,
        min_steps=args.min_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=_device(args.device),
    )
    r = train_probe(train, test, len(classes), cfg)
    logging.info(
        f"speaker ({args.protocol}, holdout_chapters={args.holdout_chapters}): test accuracy "
        f"{r.accuracy:.4f} (train {r.train_accuracy:.4f}) over {len(classes)} speakers, "
        f"{len(train)} train / {len(test)} test examples, {r.time_s:.1f} s"
    )
    lin = r.to_dict(classes)
    lin.pop("confusion")
    results = {
        "task": "speaker",
        "feature_dir": str(args.feature_dir),
        "feature_type": info.get("feature_type"),
        "dim": info.get("dim"),
        "protocol": args.protocol,
        "window_frames": args.window if args.protocol == "pooled" else 1,
        "holdout_chapters": args.holdout_chapters,
        "num_speakers": len(classes),
        "speakers_left_out": dropped,
        "num_train": len(train),
        "num_test": len(test),
        "num_train_utts": len(train_cuts),
        "num_test_utts": len(test_cuts),
        "chance": {"majority": majority_chance(train.y, test.y), "uniform": 1.0 / len(classes)},
        "load_time_s": round(load_time, 2),
        "linear": lin,
        "signature": sig,
        "created": _now(),
    }
    write_json_atomic(out_dir / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(max(1, args.num_threads))
    try:
        if args.task == "phone":
            res = run_phone(args)
            summary = f"linear {res['linear']['accuracy']:.4f}, mlp {res['mlp']['accuracy']:.4f}"
        else:
            res = run_speaker(args)
            summary = f"linear {res['linear']['accuracy']:.4f}"
    except (ProbeError, FeatureDumpError, DataPrepError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    logging.info(f"{args.task} probe on {args.feature_dir}: {summary} -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
