#!/usr/bin/env python3
"""Stage 3: 10 ms feature dumps (CPC c_t, MFCC, random-init CPC) in lhotse format.

Input:  MANIFEST_DIR/librispeech_cuts_{train,test}.jsonl.gz (stage 1: cuts with the custom
        field phone_labels); for --feat-type cpc a checkpoint (exp/<tag>/best.pt), for
        --feat-type random a training config (+ overrides) and a seed.
Output: OUTPUT_DIR/librispeech_cuts_{train,test}.jsonl.gz (the same cuts, phone_labels kept,
        with cut.features attached: frame shift 0.01 s, exactly
        compute_num_frames(duration, 0.01, 16000) frames), OUTPUT_DIR/librispeech_feats_{part}/
        (lhotse NumpyHdf5Writer storage: exact float32), OUTPUT_DIR/info.json (feature type,
        dim, frame shift, checkpoint + sha256 + step + config or the MFCC options, input
        manifests' sha256, per-part statistics and real-time factor, command line).
        With --dump-z true also OUTPUT_DIR_z/ (the encoder output z_t, same layout).

Feature types:
  cpc     c_t (GRU output, 256-d in the paper's model) of --checkpoint
  random  c_t of the same architecture untrained (torch.manual_seed(--seed), --config)
  mfcc    Kaldi-compatible MFCC, 13 cepstra + deltas + delta-deltas = 39 dims

A re-run with the same inputs does nothing; a different checkpoint, config or input manifest
rebuilds the dump. Load a dump with cpc.features.load_dump(DIR, PART, "librispeech") and
cut.load_features(): storage paths are relative to the dump directory (data/ can be moved),
and load_dump resolves them.

Example:
    python local/extract_features.py --feat-type cpc --checkpoint exp/cpc_small/best.pt \\
        --manifest-dir data/manifests --output-dir data/cpc_cpc_small --num-jobs 2
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from cpc.audio.constants import DUMP_SPEC, SAMPLING_RATE
from cpc.audio.cpc_audio import CpcAudioConfig
from cpc.audio.extractor import (
    ExtractorError,
    batch_fn_for,
    cpc_checkpoint_source,
    extraction_batching,
    mfcc_source,
    random_init_source,
    resolve_device,
)
from cpc.checkpoint import CheckpointError
from cpc.cli import HelpFormatter, str2bool
from cpc.config import ConfigError
from cpc.features import STORAGE_TYPES, FeatureDumpError, dump_features
from cpc.log import setup_logging
from cpc.perf import PRECISIONS, resolve_precision, warn_if_emulated


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--feat-type", required=True, choices=["cpc", "mfcc", "random"], help="what to dump"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="CPC checkpoint (required for --feat-type cpc): the project's (exp/<tag>/best.pt) "
        "or a CPC_audio one (a dict with 'gEncoder'; architecture from the "
        "checkpoint_args.json beside it or --cpc-audio-args)",
    )
    parser.add_argument(
        "--cpc-audio-args",
        nargs="+",
        default=None,
        help="architecture of a CPC_audio checkpoint as key=value in its own names: "
        "hiddenEncoder=256 hiddenGar=256 nLevelsGRU=2 arMode=LSTM normMode=layerNorm",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="training config YAML whose model section builds the random-init model "
        "(--feat-type random; default: the built-in defaults = the paper's model)",
    )
    parser.add_argument(
        "--override",
        nargs="+",
        default=[],
        help="config overrides key=value (--feat-type random), e.g. model.channels=256",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the random-init model")
    parser.add_argument(
        "--manifest-dir", default="data/manifests", help="holds the stage-1 labelled cuts"
    )
    parser.add_argument("--output-dir", required=True, help="the dump directory to write")
    parser.add_argument(
        "--dump-z",
        type=str2bool,
        default=False,
        help="cpc/random: also dump the encoder output z_t into OUTPUT_DIR_z/",
    )
    parser.add_argument(
        "--num-jobs", type=int, default=2, help="CPU threads used by the computation"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help="cpc/random: bf16 = the encoder's convolutions under bfloat16 autocast (the GRU "
        "stays float32; faster on CPUs with bf16 instructions, several times slower on CPUs "
        "without them); auto = bf16 where the device has native bf16, else fp32. The one used "
        "is recorded in info.json, so a change rebuilds the dump. A CPC_audio checkpoint is "
        "always read in fp32",
    )
    parser.add_argument(
        "--max-batch-duration",
        type=float,
        default=-1.0,
        help="seconds of padded audio per batch of whole utterances (sorted by duration); 0: "
        "one utterance at a time; -1: auto (120 on GPU; 100 on CPU, where the encoder runs "
        "row by row and only the GRU runs on the batch)",
    )
    parser.add_argument(
        "--pad-multiple",
        type=float,
        default=-1.0,
        help="cpc/random: each batch's waveforms are zero-padded to a multiple of this many "
        "seconds (the frames past an utterance's end are dropped; the model gives each "
        "utterance the frames it gives alone), so the convolutions see few distinct input "
        "lengths: oneDNN builds a kernel per shape, and one per utterance length cost 2.5x "
        "the time and 1.7 GB of cached kernels in bf16 on an AMX CPU; 0: pad to the hop "
        "only; -1: auto (1.0 on CPU, 0 on GPU)",
    )
    parser.add_argument(
        "--storage-type",
        default="numpy_hdf5",
        choices=list(STORAGE_TYPES),
        help="lhotse storage (both exact): one HDF5 file per part, or one .npy per cut",
    )
    parser.add_argument(
        "--parts", nargs="+", default=["train", "test"], help="manifest parts to dump"
    )
    return parser


def _cpc_audio_config(pairs: list[str] | None) -> CpcAudioConfig | None:
    """``["hiddenGar=256", "arMode=LSTM", ...]`` -> the architecture (None: not given)."""
    if not pairs:
        return None
    args: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise FeatureDumpError(f"--cpc-audio-args: expected key=value, got {pair!r}")
        args[key] = int(value) if value.isdigit() else value
    unknown = set(args) - {"hiddenEncoder", "hiddenGar", "nLevelsGRU", "arMode", "normMode"}
    if unknown:
        raise FeatureDumpError(
            f"--cpc-audio-args: unknown keys {sorted(unknown)}; use hiddenEncoder, hiddenGar, "
            "nLevelsGRU, arMode, normMode"
        )
    return CpcAudioConfig.from_args(args)


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    torch.set_num_threads(max(1, args.num_jobs))
    device = resolve_device(args.device)
    if args.precision == "auto":
        args.precision = resolve_precision("auto", device)
        logging.info(f"precision auto: {args.precision} on {device}")
    warn_if_emulated(args.precision, device, "--precision")
    max_dur, pad_multiple = extraction_batching(device, args.max_batch_duration, args.pad_multiple)
    try:
        outputs = ["c", "z"] if args.dump_z and args.feat_type != "mfcc" else ["c"]
        if args.dump_z and args.feat_type == "mfcc":
            logging.warning("--dump-z applies to cpc and random features only; ignored for mfcc")
        for out in outputs:
            if args.feat_type == "cpc":
                if not args.checkpoint:
                    raise FeatureDumpError(
                        "--feat-type cpc needs --checkpoint (e.g. exp/<tag>/best.pt)"
                    )
                extractor, source = cpc_checkpoint_source(
                    args.checkpoint,
                    out,
                    device,
                    _cpc_audio_config(args.cpc_audio_args),
                    precision=args.precision,
                )
                feat_type = "cpc" if out == "c" else "cpc_z"
                objective = ((source["config"] or {}).get("model") or {}).get("objective", "cpc")
                if objective != "cpc":  # the supervised baselines of the paper's Table 1
                    feat_type = "supervised" if out == "c" else "supervised_z"
            elif args.feat_type == "random":
                extractor, source = random_init_source(
                    args.config, args.override, args.seed, out, device, precision=args.precision
                )
                feat_type = "random" if out == "c" else "random_z"
            else:
                extractor, source = mfcc_source()
                feat_type = "mfcc"
            output_dir = args.output_dir if out == "c" else args.output_dir.rstrip("/") + "_z"
            info = dump_features(
                args.manifest_dir,
                output_dir,
                batch_fn_for(extractor, pad_multiple),
                feature_type=feat_type,
                dim=extractor.feature_dim(SAMPLING_RATE),
                source=source,
                spec=DUMP_SPEC,
                parts=args.parts,
                storage_type=args.storage_type,
                max_duration=max_dur,
                details={
                    "device": device,
                    "num_threads": torch.get_num_threads(),
                    "pad_multiple_samples": pad_multiple,
                },
            )
            logging.info(
                f"{output_dir}: {feat_type}, {info['dim']} dims, parts {list(info['parts'])}"
            )
    except (
        FeatureDumpError,
        ExtractorError,
        CheckpointError,
        ConfigError,
        FileNotFoundError,
        PermissionError,
    ) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
