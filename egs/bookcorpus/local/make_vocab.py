#!/usr/bin/env python3
"""Stage 1: the vocabulary, the --size most frequent words of the training books.

Input:  --text (stage 0's train.txt). Output: --output (``word count`` per line, most
frequent first; see cpc.text.vocab) and beside it vocab_info.json (distinct words, the share
of training tokens the vocabulary covers).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cpc.cli import HelpFormatter, positive_int
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.text.corpus import read_sentences
from cpc.text.vocab import count_words, top_words, write_vocab


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--text", required=True, help="tokenised training sentences (train.txt)")
    p.add_argument("--output", required=True, help="vocab.txt to write")
    p.add_argument("--size", type=positive_int, default=20000, help="words kept (most frequent)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    if not Path(args.text).is_file():
        logging.error(f"--text {args.text} does not exist; run stage 0 (corpus) first")
        return 1
    counts = count_words(s for b in read_sentences(args.text) for s in b)
    words = top_words(counts, args.size)
    out = Path(args.output)
    write_vocab(out, words)
    total = sum(counts.values())
    covered = sum(n for _, n in words)
    write_json_atomic(
        out.parent / "vocab_info.json",
        {
            "size": len(words),
            "requested": args.size,
            "distinct_words": len(counts),
            "train_tokens": total,
            "train_token_coverage": covered / max(total, 1),
        },
    )
    logging.info(
        f"{len(words)} words of {len(counts)} distinct; they cover "
        f"{100 * covered / max(total, 1):.2f}% of {total} training tokens -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
