#!/usr/bin/env python3
"""Build the embedded mini-LibriSpeech: speech synthesised with espeak-ng from Jane Austen's
novels, in LibriSpeech's layout, with ground-truth 10 ms phone labels (41 classes).

Input:  nothing but the environment: libespeak-ng from the PyPI package espeakng-loader (or
        Debian's libespeak-ng1) and the novels of Debian's r-cran-janeaustenr, unpacked by
        local/setup_env.sh into $CPC_VENV/share/janeaustenr.
Output: OUT_DIR, written as a whole (built beside it, then renamed into place):
          LibriSpeech/train-clean-100/SPK/CHAPTER/SPK-CHAPTER-UTT.flac (16 kHz mono PCM_16)
          LibriSpeech/train-clean-100/SPK/CHAPTER/SPK-CHAPTER.trans.txt
          LibriSpeech/SPEAKERS.TXT, LibriSpeech/CHAPTERS.TXT
          labels/converted_aligned_phones.txt, labels/train_split.txt,
          labels/test_split.txt, labels/phones.txt   (the CPC release's label format)
          info.json   (options, speaker voices, channels per chapter, statistics, chance levels)

The same options give identical audio and byte-identical label files. Speaker and channel
design: see cpc/audio/mini_librispeech.py.

Example:
    python local/make_mini_librispeech.py --out-dir download/mini_librispeech \\
        --speakers 40 --minutes 120 --clean false --seed 42 --num-jobs 2
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpc.audio.mini_librispeech import build_mini_librispeech
from cpc.cli import HelpFormatter, str2bool
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out-dir", required=True, help="corpus directory to (re)build")
    parser.add_argument("--speakers", type=int, default=40, help="number of readers (half male)")
    parser.add_argument(
        "--minutes", type=float, default=120.0, help="total minutes of audio to synthesise"
    )
    parser.add_argument(
        "--clean",
        type=str2bool,
        default="false",
        help="true: clean synthesis; false: a recording channel and noise floor per chapter",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of every choice")
    parser.add_argument("--num-jobs", type=int, default=2, help="parallel worker processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    try:
        summary = build_mini_librispeech(
            args.out_dir,
            speakers=args.speakers,
            minutes=args.minutes,
            clean=args.clean,
            seed=args.seed,
            num_jobs=args.num_jobs,
        )
    except (ValueError, OSError) as e:  # MiniLibriSpeechError, missing espeak/text, I/O
        logging.error("make_mini_librispeech.py: %s", e)
        return 1
    c = summary["chance"]
    print(
        f"{args.out_dir}: {summary['num_speakers']} speakers, {summary['num_chapters']} "
        f"chapters, {summary['num_utterances']} utterances, {summary['total_minutes']:.1f} min "
        f"in {summary['build_seconds']:.0f} s; chance: phone "
        f"{c['phone_majority_frame_accuracy']:.3f} ({c['phone_majority_class']}), "
        f"speaker {c['speaker_uniform']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
