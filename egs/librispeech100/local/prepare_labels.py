#!/usr/bin/env python3
"""Stage 1: frame-level phone labels + train/test split -> labelled lhotse cuts.

Input:  MANIFEST_DIR/librispeech_{recordings,supervisions}_train-clean-100.jsonl.gz (stage 0);
        --labels-dir in the CPC release format: converted_aligned_phones.txt
        ("<utt-id> i1 i2 ..." one class id per 10 ms frame), train_split.txt, test_split.txt
        (one utterance id per line), optional phones.txt ("<symbol> <id>"; without it the
        built-in 41-class list SIL=0, AA..ZH=1..39, SPN=40 names the ids).
Output: MANIFEST_DIR/librispeech_cuts_{train,test}.jsonl.gz (cut id = utterance id; custom
        field phone_labels: a lhotse TemporalArray, load with cut.load_phone_labels()),
        MANIFEST_DIR/phone_labels_{train,test}/ (the label arrays, one .npy per utterance),
        LANG_DIR/phones.txt.

Example:
    python local/prepare_labels.py --manifest-dir data/manifests \\
        --labels-dir download/cpc_labels --lang-dir data/lang --max-frame-diff 3
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpc.audio.labels import attach_phone_labels
from cpc.audio.librispeech import LIBRISPEECH_PART, DataPrepError
from cpc.cli import HelpFormatter
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--manifest-dir",
        default="data/manifests",
        help="holds the stage-0 manifests; receives the labelled cuts",
    )
    parser.add_argument(
        "--labels-dir",
        required=True,
        help="converted_aligned_phones.txt, train_split.txt, test_split.txt [, phones.txt]",
    )
    parser.add_argument("--lang-dir", default="data/lang", help="receives phones.txt")
    parser.add_argument(
        "--max-frame-diff",
        type=int,
        default=3,
        help="label/audio frame-count differences up to this are padded or trimmed; "
        "larger ones are errors",
    )
    parser.add_argument(
        "--part", default=LIBRISPEECH_PART, help="LibriSpeech part of the stage-0 manifests"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        attach_phone_labels(
            args.manifest_dir,
            args.labels_dir,
            args.lang_dir,
            max_frame_diff=args.max_frame_diff,
            part=args.part,
        )
    except (DataPrepError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
