"""The speech probe tasks of stages 4 and 5 (run by ``local/probe.py phone|speaker``).

phone: frame-level phone classification (41 classes) from a 10 ms feature dump.
    Input:  FEATURE_DIR/librispeech_cuts_{train,test}.jsonl.gz + info.json (stage 3; the cuts
            carry ``phone_labels`` from stage 1), LANG_DIR/phones.txt.
    Probes: ``linear`` (multinomial logistic regression), ``mlp`` (one hidden layer) and
            ``linear_context`` (each frame concatenated with its +-N neighbours).
speaker: speaker classification with a linear probe.
    Input:  FEATURE_DIR (stage 3).
    ``--protocol pooled`` (default): one example per 128-frame (20480-sample, 1.28 s)
    window, the mean of its frames (a choice of this recipe: the paper does not say;
    CPC_audio's speaker classifier reads the last context vector of a window instead);
    ``frame``: one example per frame. ``--holdout-chapters false``: the stage-1 split (by
    utterance, every speaker in both); ``true``: for every speaker one whole chapter is the
    test set and its other chapters the training set, so a chapter's recording channel
    cannot carry the speaker's identity (speakers with a single chapter are left out and
    counted).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cpc.audio.constants import DUMP_SPEC, LABEL_FIELD, PREFIX, cut_num_frames
from cpc.cli import positive_int, str2bool
from cpc.features import (
    INFO_NAME,
    collect_frames,
    collect_labels,
    frame_reader,
    load_dump,
    require_info,
)
from cpc.probe_runner import ProbeError, ProbeSet
from cpc.probes import ProbeConfig, ProbeData, StreamedRows, holdout_group_split, pool_windows

__all__ = ["PhoneTask", "SpeakerTask", "TASKS"]


def _add_max_frames(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-train-frames",
        type=int,
        default=0,
        help="use a seeded random subset of training utterances with at most this many "
        "frames (bounds memory on a large corpus); 0: all",
    )
    p.add_argument(
        "--max-test-frames",
        type=int,
        default=0,
        help="the same for the test utterances (another seeded subset); 0: all",
    )


def _add_schedule(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--schedule",
        choices=["plateau", "cosine"],
        default=default,
        help="plateau: train until the loss on a held-out 5%% of the training utterances "
        "stops improving (the rate divided by 10 at each plateau, twice, then stop; the "
        "epoch options are then caps); cosine: the fixed number of epochs with a cosine decay",
    )
    p.add_argument(
        "--check-every",
        type=int,
        default=250,
        help="plateau: updates between two checks of the held-out loss",
    )


def _scheduled(cfg: ProbeConfig, args: argparse.Namespace) -> ProbeConfig:
    if args.schedule == "cosine":
        return cfg
    return ProbeConfig(**{**cfg.__dict__, "schedule": "plateau", "check_every": args.check_every})


def _subsample(cuts: list, max_frames: int, seed: int, what: str = "training") -> list:
    """A seeded random subset of ``cuts`` with at most ``max_frames`` frames (at least one
    cut), in id order; all of them when ``max_frames <= 0`` or they fit."""
    if max_frames <= 0 or sum(cut_num_frames(c) for c in cuts) <= max_frames:
        return cuts
    rng = np.random.default_rng(seed)
    out, total = [], 0
    for i in rng.permutation(len(cuts)):
        n = cut_num_frames(cuts[i])
        if total + n > max_frames and out:
            break
        out.append(cuts[i])
        total += n
    logging.info(f"using {len(out)} of {len(cuts)} {what} utterances ({total} frames)")
    return sorted(out, key=lambda c: c.id)


def _dump_info(feature_dir: str) -> dict[str, Any]:
    info = require_info(feature_dir)
    return {"feature_type": info.get("feature_type"), "dim": info.get("dim")}


def _phone_labels(cut: Any, n: int) -> np.ndarray:
    if not cut.has_custom(LABEL_FIELD):
        raise ProbeError(
            f"utterance {cut.id} has no {LABEL_FIELD}; the dump must be made from the stage-1 "
            f"cuts (data/manifests/{PREFIX}_cuts_*.jsonl.gz); re-run stages 1 and 3"
        )
    return cut.load_custom(LABEL_FIELD)


def _chapter(cut: Any) -> str:
    sup = cut.supervisions[0]
    chap = (sup.custom or {}).get("chapter") if sup.custom else None
    return str(chap) if chap is not None else cut.id.split("-")[1]


def _frames(cuts: list, block_frames: int, dim: int, split: str) -> ProbeData:
    """The labelled frames of ``cuts``: in memory when they fit in one block (or
    ``block_frames <= 0``), else streamed from the dump block by block (labels in memory)."""
    if block_frames <= 0 or sum(cut_num_frames(c) for c in cuts) <= block_frames:
        x, y, offsets, _ = collect_frames(cuts, DUMP_SPEC, _phone_labels, split)
        return ProbeData.from_numpy(x, y, offsets)
    y, offsets = collect_labels(cuts, DUMP_SPEC, _phone_labels, f"{split} labels")
    rows = StreamedRows(frame_reader(cuts, DUMP_SPEC), offsets, dim, block_frames)
    logging.info(
        f"{split}: {int(offsets[-1])} frames of {len(cuts)} utterances read from the dump in "
        f"blocks of at most {block_frames} frames"
    )
    return ProbeData(rows, torch.from_numpy(y))


class PhoneTask:
    """Frame-level phone probes (see the module docstring)."""

    name = "phone"
    help = "frame-level phone probes (linear, one hidden layer, linear with context)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--lang-dir", default="data/lang", help="holds phones.txt")
        p.add_argument("--linear-epochs", type=int, default=20, help="epochs of linear probes")
        p.add_argument("--mlp-epochs", type=int, default=10, help="epochs of the MLP probe")
        p.add_argument("--mlp-hidden", type=int, default=512, help="hidden units of the MLP")
        p.add_argument("--mlp-lr", type=float, default=2e-3, help="Adam learning rate of the MLP")
        p.add_argument(
            "--context-frames",
            type=int,
            default=2,
            help="also a linear probe on each frame with +-N neighbours concatenated; 0: skip",
        )
        _add_max_frames(p)
        p.add_argument(
            "--block-frames",
            type=int,
            default=131072,
            help="frames are read from the dump in blocks of whole utterances with at most "
            "this many frames (training: a new random order of the utterances every epoch, "
            "rows shuffled within each block), so memory holds one block (128 MB of "
            "256-dim features), not the corpus; 0, or a split that fits in one block: all "
            "its frames in memory",
        )
        _add_schedule(p, "plateau")
        p.add_argument(
            "--linear-check-every",
            type=positive_int,
            default=500,
            help="plateau: updates between two checks of the held-out loss for the linear "
            "probes (--check-every is the MLP's); a linear probe on weak features improves "
            "by less than 0.1%% per 250 updates long before it has converged",
        )

    def inputs(self, args: argparse.Namespace) -> list[Path]:
        info = Path(args.feature_dir) / INFO_NAME
        phones = Path(args.lang_dir) / "phones.txt"
        for p, stage in ((info, "the feature dump (stage 3)"), (phones, "stage 1")):
            if not p.is_file():
                raise FileNotFoundError(f"{p} does not exist; run {stage} first")
        return [info, phones]

    def load(self, args: argparse.Namespace, probe: ProbeConfig) -> ProbeSet:
        from cpc.audio.labels import read_phones

        phones_txt = Path(args.lang_dir) / "phones.txt"
        names = read_phones(phones_txt)
        train_cuts = _subsample(
            list(load_dump(args.feature_dir, "train", PREFIX)), args.max_train_frames, args.seed
        )
        test_cuts = _subsample(
            list(load_dump(args.feature_dir, "test", PREFIX)),
            args.max_test_frames,
            args.seed + 1,
            "test",
        )
        dim = int(require_info(args.feature_dir)["dim"])
        train = _frames(train_cuts, args.block_frames, dim, "train")
        test = _frames(test_cuts, args.block_frames, dim, "test")
        for split, y in (("train", train.y.numpy()), ("test", test.y.numpy())):
            if y.min() < 0 or y.max() >= len(names):
                raise ProbeError(
                    f"{split} labels span {y.min()}..{y.max()} but {phones_txt} has {len(names)} "
                    "classes; the labels and the phone table come from different stage-1 runs"
                )
        probe = _scheduled(probe, args)
        linear = ProbeConfig(
            **{
                **probe.__dict__,
                "epochs": args.linear_epochs,
                "check_every": args.linear_check_every if probe.check_every else 0,
            }
        )
        probes = {
            "linear": linear,
            "mlp": ProbeConfig(
                **{
                    **probe.__dict__,
                    "epochs": args.mlp_epochs,
                    "lr": args.mlp_lr,
                    "hidden_dim": args.mlp_hidden,
                    "min_steps": 0,  # --min-steps is for the linear probes
                }
            ),
        }
        if args.context_frames > 0:
            probes["linear_context"] = ProbeConfig(
                **{**linear.__dict__, "context": args.context_frames}
            )
        return ProbeSet(
            train=train,
            test=test,
            class_names=names,
            probes=probes,
            info={
                **_dump_info(args.feature_dir),
                "unit": "10 ms frame",
                "num_train_utts": len(train_cuts),
                "num_test_utts": len(test_cuts),
                "max_train_frames": args.max_train_frames,
                "max_test_frames": args.max_test_frames,
                "block_frames": args.block_frames,
                "streamed": {"train": train.streamed, "test": test.streamed},
                "schedule": args.schedule,
            },
            confusion_plots=("linear", "mlp"),
        )


class SpeakerTask:
    """The linear speaker probe (see the module docstring)."""

    name = "speaker"
    help = "speaker probe (linear), pooled windows or single frames"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--protocol",
            choices=["pooled", "frame"],
            default="pooled",
            help="pooled: mean over WINDOW-frame windows; frame: every 10 ms frame",
        )
        p.add_argument(
            "--window", type=int, default=128, help="frames per pooled window (128 = 20480 samples)"
        )
        p.add_argument(
            "--holdout-chapters",
            type=str2bool,
            default=False,
            help="true: test on one held-out chapter per speaker; false: the stage-1 split",
        )
        p.add_argument("--epochs", type=int, default=20, help="training epochs (see --min-steps)")
        _add_max_frames(p)

    def inputs(self, args: argparse.Namespace) -> list[Path]:
        info = Path(args.feature_dir) / INFO_NAME
        if not info.is_file():
            raise FileNotFoundError(f"{info} does not exist; run the feature dump (stage 3)")
        return [info]

    def _examples(self, cuts: list, args: argparse.Namespace, desc: str) -> tuple:
        speakers = [c.supervisions[0].speaker for c in cuts]
        if args.protocol == "pooled":  # pooled cut by cut: only the windows are held
            pooled = []
            for cut in tqdm(cuts, desc=desc, unit="cut"):
                x, _, offsets, _ = collect_frames([cut], DUMP_SPEC, progress=False)
                pooled.append(pool_windows(x, offsets, args.window)[0])
            seq = np.repeat(np.arange(len(cuts)), [len(w) for w in pooled])
            return np.concatenate(pooled), [speakers[u] for u in seq]
        x, _, offsets, _ = collect_frames(cuts, DUMP_SPEC, None, desc)
        seq = np.repeat(np.arange(len(cuts)), np.diff(offsets))
        return x, [speakers[u] for u in seq]

    def load(self, args: argparse.Namespace, probe: ProbeConfig) -> ProbeSet:
        train_cuts = list(load_dump(args.feature_dir, "train", PREFIX))
        test_cuts = list(load_dump(args.feature_dir, "test", PREFIX))
        dropped: list[str] = []
        if args.holdout_chapters:
            all_cuts = sorted(train_cuts + test_cuts, key=lambda c: c.id)
            spk = [c.supervisions[0].speaker for c in all_cuts]
            is_test, dropped = holdout_group_split(spk, [_chapter(c) for c in all_cuts], args.seed)
            keep = set(spk) - set(dropped)
            train_cuts = [c for c, t, s in zip(all_cuts, is_test, spk) if not t and s in keep]
            test_cuts = [c for c, t, s in zip(all_cuts, is_test, spk) if t and s in keep]
            if dropped:
                logging.warning(
                    f"{len(dropped)} speaker(s) with a single chapter left out of the "
                    f"held-out-chapter probe: {', '.join(dropped[:10])}"
                    + (" ..." if len(dropped) > 10 else "")
                )
            if not test_cuts:
                raise ProbeError(
                    f"{args.feature_dir}: no speaker has two chapters, so no chapter can be "
                    "held out; use --holdout-chapters false"
                )
        train_cuts = _subsample(train_cuts, args.max_train_frames, args.seed)
        test_cuts = _subsample(test_cuts, args.max_test_frames, args.seed + 1, "test")
        x_tr, spk_tr = self._examples(train_cuts, args, "train")
        x_te, spk_te = self._examples(test_cuts, args, "test")
        classes = sorted(set(spk_tr))
        index = {s: i for i, s in enumerate(classes)}
        unseen = sorted(set(spk_te) - set(classes))
        if unseen:
            logging.warning(f"test speakers absent from training, left out: {unseen[:10]}")
            keep_rows = np.array([s in index for s in spk_te])
            x_te, spk_te = x_te[keep_rows], [s for s in spk_te if s in index]
        y_tr = np.array([index[s] for s in spk_tr], dtype=np.int64)
        y_te = np.array([index[s] for s in spk_te], dtype=np.int64)
        return ProbeSet(
            train=ProbeData.from_numpy(x_tr, y_tr),
            test=ProbeData.from_numpy(x_te, y_te),
            class_names=classes,
            probes={"linear": ProbeConfig(**{**probe.__dict__, "epochs": args.epochs})},
            info={
                **_dump_info(args.feature_dir),
                "protocol": args.protocol,
                "unit": (
                    f"mean of {args.window} frames" if args.protocol == "pooled" else "10 ms frame"
                ),
                "window_frames": args.window if args.protocol == "pooled" else 1,
                "holdout_chapters": args.holdout_chapters,
                "num_speakers": len(classes),
                "speakers_left_out": dropped,
                "num_train_utts": len(train_cuts),
                "num_test_utts": len(test_cuts),
            },
            confusion_plots=(),
            keep_confusion=False,
        )


TASKS = {t.name: t for t in (PhoneTask(), SpeakerTask())}
