#!/usr/bin/env python3
"""Stage 0: LibriSpeech train-clean-100 -> lhotse recording and supervision manifests.

Input:  --corpus-dir, the LibriSpeech root holding train-clean-100/ (and SPEAKERS.TXT);
        the train-clean-100 directory itself, or a directory holding LibriSpeech/, also work.
Output: OUTPUT_DIR/librispeech_recordings_train-clean-100.jsonl.gz
        OUTPUT_DIR/librispeech_supervisions_train-clean-100.jsonl.gz
        (lhotse's own names and ids; supervisions also carry gender and custom chapter)

Example:
    python local/prepare_manifests.py --corpus-dir download/LibriSpeech \\
        --output-dir data/manifests --num-jobs 4
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpc.audio.librispeech import LIBRISPEECH_PART, DataPrepError, prepare_librispeech_manifests
from cpc.cli import HelpFormatter
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--corpus-dir", required=True, help="LibriSpeech root that holds train-clean-100/"
    )
    parser.add_argument(
        "--output-dir", default="data/manifests", help="where the manifests are written"
    )
    parser.add_argument(
        "--num-jobs", type=int, default=2, help="parallel threads reading audio headers"
    )
    parser.add_argument("--part", default=LIBRISPEECH_PART, help="LibriSpeech part to prepare")
    parser.add_argument(
        "--check-audio",
        choices=["header", "tail", "full"],
        default="tail",
        help="how much of each .flac to read: header only; header and the last 10 ms "
        "(catches truncated files cheaply); or decode every file completely",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        prepare_librispeech_manifests(
            args.corpus_dir,
            args.output_dir,
            part=args.part,
            num_jobs=args.num_jobs,
            check_audio=args.check_audio,
        )
    except (DataPrepError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
