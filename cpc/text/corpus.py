"""A BookCorpus-style directory of plain-text books -> tokenised sentences.

Input layout (BookCorpus as distributed, and the embedded corpus): a directory with one
``<book>.txt`` per book, paragraphs separated by blank lines. Files are read as UTF-8; bytes
that are not UTF-8 are replaced by U+FFFD, counted, and the book is named in the report (never
silently dropped or silently decoded as another encoding).

Sentence splitting and tokenisation: ``syntok`` (rule-based, maintained, pure Python, no model
download; it keeps abbreviations such as "Mr." and decimal numbers inside a sentence and splits
clitics like "it's" -> "it", "'s" the way the Penn treebank does).

Normalisation (:func:`normalize_text` before segmentation, :func:`normalize_token` after):
Unicode NFKC; curly quotes and apostrophes -> ASCII; dashes -> " -- "; underscores (Project
Gutenberg italics) removed; tokens lower-cased; every digit -> ``0`` (so numbers share
vocabulary entries); U+FFFD (an undecodable byte) dropped from tokens. Sentences without any
token left are dropped.

Outputs (:func:`write_sentences`): one sentence per line, tokens separated by single spaces,
an empty line between books (sentence windows never cross a book boundary).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from cpc.io import Pathlike, atomic_open

REPLACEMENT = "\ufffd"


class CorpusError(ValueError):
    """A book directory or book that cannot be used (the message names it and the fix)."""


@dataclass
class Book:
    """One book: its name (file stem), sentences as token lists, decoding errors."""

    name: str
    sentences: list[list[str]]
    decode_errors: int = 0
    first_error_offset: int | None = None

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sentences)


@dataclass
class CorpusReport:
    """What reading a book directory found."""

    books: list[str] = field(default_factory=list)
    empty_books: list[str] = field(default_factory=list)
    encoding_errors: dict[str, dict[str, int | None]] = field(default_factory=dict)


_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": " -- ",
        "\u2014": " -- ",
        "_": "",
    }
)
_DIGIT = re.compile(r"\d")


def normalize_text(text: str) -> str:
    """NFKC, ASCII quotes, spaced dashes, no underscores (see the module docstring)."""
    return unicodedata.normalize("NFKC", text).translate(_QUOTES)


def normalize_token(token: str) -> str:
    """Lower case, digits -> 0, replacement characters removed."""
    return _DIGIT.sub("0", token.lower()).replace(REPLACEMENT, "")


def tokenize_paragraphs(text: str) -> Iterator[list[str]]:
    """Sentences (token lists) of ``text`` by syntok, normalised; empty ones skipped."""
    from syntok import segmenter

    for paragraph in segmenter.process(normalize_text(text)):
        for sentence in paragraph:
            toks = [normalize_token(t.value) for t in sentence]
            toks = [t for t in toks if t]
            if toks:
                yield toks


def tokenize_sentence(text: str) -> list[str]:
    """All tokens of ``text`` (one evaluation item, possibly several sentences) as one list."""
    return [t for s in tokenize_paragraphs(text) for t in s]


def decode_book(data: bytes) -> tuple[str, int, int | None]:
    """UTF-8 text of ``data`` (a BOM dropped), the number of undecodable bytes (each replaced
    by U+FFFD) and the byte offset of the first one (None if none)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), 0, None
    except UnicodeDecodeError as e:
        first = e.start
    bad = 0

    def count(err: UnicodeDecodeError) -> tuple[str, int]:
        nonlocal bad
        bad += err.end - err.start
        return REPLACEMENT * (err.end - err.start), err.end

    import codecs

    codecs.register_error("cpc_count", count)
    text = data.decode("utf-8", errors="cpc_count")
    return text, bad, first


def list_books(corpus_dir: Pathlike) -> list[Path]:
    """The ``*.txt`` files of ``corpus_dir`` in name order; CorpusError if there are none."""
    d = Path(corpus_dir)
    if not d.is_dir():
        raise CorpusError(f"--corpus-dir {d} is not a directory (expected one .txt per book)")
    books = sorted(p for p in d.iterdir() if p.suffix == ".txt" and p.is_file())
    if not books:
        raise CorpusError(f"{d}: no .txt books; the layout is one plain-text file per book")
    return books


def read_book(path: Pathlike, max_sentences: int = 0) -> Book:
    """One book file -> :class:`Book` (sentences tokenised, decoding errors counted); with
    ``max_sentences``, only the first ones."""
    path = Path(path)
    text, bad, first = decode_book(path.read_bytes())
    sents = tokenize_paragraphs(text)
    return Book(path.stem, list(islice(sents, max_sentences or None)), bad, first)


def read_books(paths: Iterable[Path], max_sentences: int = 0) -> tuple[list[Book], CorpusReport]:
    """Read and tokenise every book; empty books (no sentence) are left out and named in the
    report, as are books with undecodable bytes (logged with their count and first offset)."""
    paths = list(paths)
    report = CorpusReport()
    books: list[Book] = []
    for p in tqdm(paths, desc="tokenising books", unit="book", mininterval=2):
        b = read_book(p, max_sentences)
        if b.decode_errors:
            report.encoding_errors[p.name] = {
                "bytes": b.decode_errors,
                "first_offset": b.first_error_offset,
            }
            logging.warning(
                f"{p}: {b.decode_errors} byte(s) are not UTF-8 (first at byte "
                f"{b.first_error_offset}); replaced and dropped from tokens. Convert the file "
                "to UTF-8 (e.g. iconv -f latin1 -t utf-8) if this is another encoding"
            )
        if not b.sentences:
            report.empty_books.append(p.name)
            logging.warning(f"{p}: no sentence in this book (empty file?); left out")
            continue
        report.books.append(b.name)
        books.append(b)
    if not books:
        raise CorpusError(f"no book with any sentence among {len(paths)} file(s)")
    return books, report


def write_sentences(path: Pathlike, books: Iterable[Book]) -> None:
    """One sentence per line (space-separated tokens), an empty line after each book."""
    with atomic_open(path) as f:
        for b in books:
            for s in b.sentences:
                f.write(" ".join(s) + "\n")
            f.write("\n")


def read_sentences(path: Pathlike) -> list[list[list[str]]]:
    """The books of a :func:`write_sentences` file: ``[book][sentence][token]``."""
    books: list[list[list[str]]] = []
    cur: list[list[str]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                if cur:
                    books.append(cur)
                cur = []
            else:
                cur.append(line.split(" "))
    if cur:
        books.append(cur)
    return books
