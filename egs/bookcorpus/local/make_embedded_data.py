#!/usr/bin/env python3
"""Build the embedded default data (cpc.text.embedded): public-domain books in the BookCorpus
layout and the MR-like / CR-like tasks in the SentEval layout.

Outputs:
  OUT_DIR/books/<book>.txt            the six Austen novels and kjv.txt (one file per book)
  OUT_DIR/senteval/MR-like/rt-polarity.{pos,neg}, OUT_DIR/senteval/CR-like/custrev.{pos,neg}
  OUT_DIR/info.json                   counts (positive, negative, zero-rated dropped, ...)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cpc.cli import HelpFormatter
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.text.corpus import CorpusError
from cpc.text.embedded import write_embedded_books, write_embedded_senteval


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out-dir", required=True, help="where books/ and senteval/ are written")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    out = Path(args.out_dir)
    try:
        books = write_embedded_books(out / "books")
        counts = write_embedded_senteval(out / "senteval")
    except (CorpusError, FileNotFoundError) as e:
        logging.error(str(e))
        return 1
    write_json_atomic(out / "info.json", {"books": [p.name for p in books], "senteval": counts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
