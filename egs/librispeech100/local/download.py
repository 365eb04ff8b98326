#!/usr/bin/env python3
"""Stage -1: download LibriSpeech parts (SHA-256 verified, resumable) and optionally the CPC
release's phone labels; check labels by content against the corpus.

Archives come from <base-url>/12/<part>.tar.gz (OpenSLR's layout; a mirror with the same
layout works), are resumed when a previous run was interrupted, verified against the
published SHA-256 (or --checksums) before they are unpacked into TARGET_DIR/LibriSpeech/, and
a corrupted archive is refused by name and moved aside. See cpc/audio/download.py.

--labels-url fetches converted_aligned_phones.txt, train_split.txt, test_split.txt (and
phones.txt if there is one) into --labels-dir. With --check-labels, the labels in
--labels-dir are checked by content against TARGET_DIR/LibriSpeech/<first part> (or
--corpus-dir): class ids, disjoint non-empty splits, every split utterance labelled and
present in the corpus; the sizes are written to --report.

Example:
    python local/download.py --target-dir download --parts train-clean-100 dev-clean \\
        --labels-url https://example.org/cpc_labels --labels-dir download/cpc_labels \\
        --check-labels true --report data/download.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cpc.audio.download import (
    DEFAULT_BASE_URL,
    DownloadError,
    check_labels,
    download_labels,
    download_parts,
    read_checksums,
)
from cpc.audio.librispeech import DataPrepError, find_part_dir
from cpc.cli import HelpFormatter, str2bool
from cpc.io import write_json_atomic
from cpc.log import setup_logging


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--target-dir", default="download", help="archives and LibriSpeech/ go here")
    p.add_argument(
        "--parts",
        nargs="*",
        default=["train-clean-100", "dev-clean", "test-clean"],
        help="LibriSpeech parts to download (any of the seven; none: labels only)",
    )
    p.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="archives are fetched from <base-url>/12/<part>.tar.gz",
    )
    p.add_argument(
        "--checksums",
        default="",
        help="sha256sum-format file for archives other than the published ones",
    )
    p.add_argument("--labels-url", default="", help="directory URL of the CPC label files")
    p.add_argument("--labels-dir", default="", help="where the label files are (or go)")
    p.add_argument(
        "--check-labels",
        type=str2bool,
        default=False,
        help="check --labels-dir by content against the corpus",
    )
    p.add_argument(
        "--corpus-dir",
        default="",
        help="--check-labels: the LibriSpeech root (default TARGET_DIR/LibriSpeech)",
    )
    p.add_argument("--part", default="train-clean-100", help="--check-labels: the labelled part")
    p.add_argument("--report", default="", help="write what was done and the sizes here (JSON)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    report: dict = {"parts": args.parts, "base_url": args.base_url}
    try:
        sums = read_checksums(args.checksums) if args.checksums else None
        if args.parts:
            root = download_parts(args.target_dir, args.parts, args.base_url, sums)
            report["corpus_dir"] = str(root)
        if args.labels_url:
            if not args.labels_dir:
                raise DownloadError("--labels-url needs --labels-dir (where the files go)")
            download_labels(args.labels_url, args.labels_dir)
            report["labels_url"] = args.labels_url
        if args.check_labels:
            corpus = args.corpus_dir or str(Path(args.target_dir) / "LibriSpeech")
            report["labels"] = check_labels(args.labels_dir, find_part_dir(corpus, args.part))
            logging.info(f"labels checked: {report['labels']}")
    except (DataPrepError, FileNotFoundError, PermissionError) as e:
        logging.error(str(e))
        return 1
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
