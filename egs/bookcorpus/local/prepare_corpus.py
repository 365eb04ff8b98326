#!/usr/bin/env python3
"""Stage 0: a directory of plain-text books -> tokenised sentences (cpc.text.corpus).

Input:  --corpus-dir with one <book>.txt per book (UTF-8; other bytes are counted and named).
Output: OUTPUT_DIR/train.txt, OUTPUT_DIR/valid.txt (one tokenised sentence per line, an empty
        line between books; valid.txt holds the --valid-books), OUTPUT_DIR/corpus_info.json
        (books, sentences and tokens per book, empty books, encoding errors, the tokeniser).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import version
from pathlib import Path

from cpc.cli import HelpFormatter
from cpc.io import write_json_atomic
from cpc.log import setup_logging
from cpc.text.corpus import Book, CorpusError, list_books, read_books, write_sentences


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--corpus-dir", required=True, help="one .txt per book")
    p.add_argument("--output-dir", required=True, help="receives train.txt, valid.txt")
    p.add_argument(
        "--valid-books",
        default="",
        help="comma-separated book names (file stems) held out for the validation loss; "
        "empty: the last book in name order",
    )
    p.add_argument(
        "--max-sentences-per-book",
        type=int,
        default=0,
        help="keep only each book's first N sentences (0: all; for tiny test runs)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    out = Path(args.output_dir)
    try:
        paths = list_books(args.corpus_dir)
        names = [p.stem for p in paths]
        valid = [v for v in args.valid_books.split(",") if v] or [names[-1]]
        missing = [v for v in valid if v not in names]
        if missing:
            raise CorpusError(
                f"--valid-books {','.join(missing)}: no such book in {args.corpus_dir} "
                f"(books: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''})"
            )
        books, report = read_books(paths, args.max_sentences_per_book)
    except (CorpusError, OSError) as e:
        logging.error(str(e))
        return 1
    train: list[Book] = [b for b in books if b.name not in valid]
    held: list[Book] = [b for b in books if b.name in valid]
    if not train or not held:
        logging.error(f"need at least one training and one validation book (valid: {valid})")
        return 1
    write_sentences(out / "train.txt", train)
    write_sentences(out / "valid.txt", held)
    info = {
        "corpus_dir": str(args.corpus_dir),
        "tokenizer": f"syntok {version('syntok')}",
        "normalisation": "NFKC; ASCII quotes; dashes spaced; underscores removed; lower case; "
        "digits -> 0",
        "valid_books": valid,
        "books": {b.name: {"sentences": len(b.sentences), "tokens": b.num_tokens} for b in books},
        "train": {
            "books": len(train),
            "sentences": sum(len(b.sentences) for b in train),
            "tokens": sum(b.num_tokens for b in train),
        },
        "valid": {
            "books": len(held),
            "sentences": sum(len(b.sentences) for b in held),
            "tokens": sum(b.num_tokens for b in held),
        },
        "empty_books": report.empty_books,
        "encoding_errors": report.encoding_errors,
    }
    write_json_atomic(out / "corpus_info.json", info)
    logging.info(
        f"{len(train)} training books ({info['train']['sentences']} sentences, "
        f"{info['train']['tokens']} tokens), {len(held)} validation book(s) "
        f"({info['valid']['sentences']} sentences); {len(report.empty_books)} empty, "
        f"{len(report.encoding_errors)} with encoding errors -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
