"""Source text of the embedded speech corpus: Jane Austen's six novels (public domain) from
Debian's ``r-cran-janeaustenr`` data package, read without R.

The package stores each novel as an R character vector (one element per printed line) in
R's lazy-load database: ``data/Rdata.rdx`` (a gzip-compressed R serialization of
``list(variables = list(<name> = c(offset, length), ...), references, compressed)``) and
``data/Rdata.rdb`` (records at those offsets: a 4-byte big-endian uncompressed length, then a
zlib stream holding an R serialization). ``read_lazyload_db`` unpacks that framing and parses
each serialization with the ``rdata`` library.

``austen_chapters()`` turns the lines into chapters of clean sentences: chapter and volume
headings, front matter and italics underscores are dropped, a few abbreviations are spelt
out (``Mr.`` -> ``Mister``), sentences with digits or unusual characters are skipped, short
sentences are merged and long ones split at ``;``/``:`` so that each reads in about 2-15 s.
Each ``Sentence`` has the text given to the synthesiser (with punctuation, for prosody) and
the transcript in LibriSpeech's style (upper case, no punctuation except apostrophes).
"""

from __future__ import annotations

import bz2
import functools
import lzma
import os
import re
import struct
import sys
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rdata

from cpc.io import Pathlike

#: The novels in the order janeaustenr's ``austen_books()`` lists them, with their titles.
AUSTEN_BOOKS: dict[str, str] = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

SYSTEM_JANEAUSTENR = "/usr/lib/R/site-library/janeaustenr"


class RDataError(ValueError):
    """An R data file, or one object in it, could not be read (the message names which)."""


# ---------------------------------------------------------------------------------------------
# R's lazy-load database
# ---------------------------------------------------------------------------------------------

# rdata parses single R serializations (RDS/RData files), not R's lazy-load database (an
# index of offsets into a file of separately framed and compressed records), so that framing
# is unpacked here and only each record's serialization is handed to rdata.

# Type byte of a record written with ``compressed`` 2 or 3 (R's R_decompress2/3).
_RECORD_CODECS: dict[bytes, Callable[[bytes], bytes]] = {
    b"Z": zlib.decompress,
    b"1": zlib.decompress,
    b"2": bz2.decompress,
    b"X": lzma.decompress,
    b"0": bytes,
}


def _decompress_record(raw: bytes, compressed: int, what: str) -> bytes:
    """One lazy-load record as an R serialization. ``compressed`` is the index's: 0, the
    record is the serialization itself; 1, a 4-byte big-endian uncompressed length and a
    zlib stream; 2 or 3, the length, a type byte (``_RECORD_CODECS``) and that stream."""
    if not compressed:
        return raw
    if len(raw) < 4:
        raise RDataError(f"{what}: record shorter than its 4-byte header")
    (n,) = struct.unpack(">I", raw[:4])
    body = raw[4:]
    decompress: Callable[[bytes], bytes] = zlib.decompress
    if compressed in (2, 3):
        kind, body = body[:1], body[1:]
        if kind not in _RECORD_CODECS:
            raise RDataError(f"{what}: unknown record compression {kind!r}")
        decompress = _RECORD_CODECS[kind]
    try:
        out = decompress(body)
    except (zlib.error, lzma.LZMAError, OSError, ValueError, EOFError) as e:
        raise RDataError(f"{what}: cannot decompress record: {e}") from e
    if len(out) != n:
        raise RDataError(f"{what}: record length {len(out)}, header says {n}")
    return out


def _read_r(data: bytes, what: str) -> Any:
    """One R serialization (bare, or gzip/bzip2/xz-compressed) as Python objects, with
    rdata: a character vector -> ``list[str | None]`` (NA -> None); anything else as
    ``rdata.conversion.convert`` gives it (named list -> dict, vector -> numpy array, ...)."""
    try:
        with warnings.catch_warnings():
            # lazy-load records are bare serializations without RDS's file magic: expected
            warnings.filterwarnings(
                "ignore", message="Unknown file type: assumed RDS", category=UserWarning
            )
            parsed = rdata.parser.parse_data(data)
            value = rdata.conversion.convert(parsed)
    except Exception as e:  # noqa: BLE001 - rdata raises ValueError, AssertionError, ...
        raise RDataError(f"{what}: not a readable R serialization: {type(e).__name__}: {e}") from e
    if parsed.object.info.type is rdata.parser.RObjectType.STR:
        return [None if s is None else str(s) for s in value]
    return value


def read_lazyload_db(data_dir: Pathlike) -> dict[str, list[str | None] | Any]:
    """Read every object of an R lazy-load database ``<data_dir>/Rdata.{rdx,rdb}``.

    Returns ``{object name: value}``: a character vector as ``list[str | None]`` (NA ->
    None), any other object as ``rdata.conversion.convert`` gives it (numpy arrays, dicts
    for named lists, ...). Raises ``FileNotFoundError``, or ``RDataError`` naming the file
    and object for an unreadable index or record.
    """
    data_dir = Path(data_dir)
    rdx, rdb = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    for p in (rdx, rdb):
        if not p.is_file():
            raise FileNotFoundError(f"missing {p}")
    index = _read_r(rdx.read_bytes(), str(rdx))
    if not isinstance(index, dict) or "variables" not in index:
        raise RDataError(f"{rdx}: no 'variables' entry in the index")
    variables = index["variables"]
    if isinstance(variables, list) and not variables:  # an unnamed empty list()
        variables = {}
    if not isinstance(variables, dict):
        raise RDataError(f"{rdx}: 'variables' is not a named list")
    comp = np.ravel(index.get("compressed", [1]))
    compressed = int(comp[0]) if comp.size else 1  # TRUE -> 1
    blob = rdb.read_bytes()
    out: dict[str, list[str | None] | Any] = {}
    for name, loc in variables.items():
        what = f"{rdb} object {str(name)!r}"
        key = np.ravel(loc)
        if key.size != 2 or key.dtype.kind not in "iuf":
            raise RDataError(f"{rdx}: the key of {str(name)!r} is not (offset, length)")
        offset, length = int(key[0]), int(key[1])
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise RDataError(f"{what}: offset {offset}+{length} beyond the file's {len(blob)}")
        data = _decompress_record(blob[offset : offset + length], compressed, what)
        out[str(name)] = _read_r(data, what)
    return out


# ---------------------------------------------------------------------------------------------
# The Austen novels
# ---------------------------------------------------------------------------------------------


def find_janeaustenr(root: Pathlike | None = None) -> Path:
    """The janeaustenr package directory: ``root`` if given, else
    ``$CPC_VENV/share/janeaustenr`` (unpacked by local/setup_env.sh), else the running
    venv's ``share/janeaustenr``, else the system's ``/usr/lib/R/site-library/janeaustenr``.
    Raises ``FileNotFoundError`` with the fix."""
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root))
    else:
        venv = os.environ.get("CPC_VENV")
        if venv:
            candidates.append(Path(venv) / "share" / "janeaustenr")
        if sys.prefix != sys.base_prefix:  # running inside a venv: its share/ directory
            candidates.append(Path(sys.prefix) / "share" / "janeaustenr")
        candidates.append(Path(SYSTEM_JANEAUSTENR))
    for c in candidates:
        if (c / "data" / "Rdata.rdb").is_file() and (c / "data" / "Rdata.rdx").is_file():
            return c
    raise FileNotFoundError(
        "the Jane Austen source text was not found (looked for data/Rdata.rdb in "
        + ", ".join(str(c) for c in candidates)
        + "). Run local/setup_env.sh (it unpacks Debian's r-cran-janeaustenr into "
        "$CPC_VENV/share/janeaustenr), or install the Debian package r-cran-janeaustenr."
    )


def load_austen_novels(root: Pathlike | None = None) -> dict[str, list[str]]:
    """The six novels as ``{name: lines}`` in ``AUSTEN_BOOKS`` order (NA lines as "")."""
    pkg = find_janeaustenr(root)
    objs = read_lazyload_db(pkg / "data")
    out: dict[str, list[str]] = {}
    for name in AUSTEN_BOOKS:
        if name not in objs:
            raise RDataError(f"{pkg / 'data' / 'Rdata.rdx'}: no novel {name!r}")
        obj = objs[name]
        if not isinstance(obj, list):
            raise RDataError(
                f"{pkg / 'data' / 'Rdata.rdb'} object {name!r}: not a character vector "
                f"(read as {type(obj).__name__})"
            )
        out[name] = [s or "" for s in obj]
    return out


@dataclass(frozen=True)
class Sentence:
    """text: what the synthesiser reads (punctuation kept); transcript: LibriSpeech style."""

    text: str
    transcript: str

    @property
    def num_words(self) -> int:
        return len(self.transcript.split())


@dataclass
class BookChapter:
    """One chapter of a novel as a list of sentences."""

    book: str
    number: int
    sentences: list[Sentence]

    @property
    def title(self) -> str:
        return f"{AUSTEN_BOOKS.get(self.book, self.book)}, chapter {self.number}"


_HEADING = re.compile(r"^(CHAPTER|Chapter|VOLUME|Volume|BOOK|Book)\b[\sIVXLCDM0-9.]*$")
_ABBREVIATIONS = [
    (r"\bMrs\b\.?", "Missus"),
    (r"\bMr\b\.?", "Mister"),
    (r"\bDr\b\.?", "Doctor"),
    (r"\bSt\.", "Saint"),
    (r"\bEsq\.", "Esquire"),
    (r"\bCol\.", "Colonel"),
    (r"\bCapt\.", "Captain"),
    (r"\bGen\.", "General"),
    (r"\bAdm\.", "Admiral"),
    (r"\bRev\.", "Reverend"),
    (r"&c\.?", "et cetera"),
    (r"&", "and"),
]
_ALLOWED = re.compile(r"^[A-Za-z' ,.;:!?]+$")
_ROMAN = re.compile(r"^[IVXLCDM]{2,}$")


def _is_heading(line: str) -> bool:
    s = line.strip()
    if _HEADING.match(s):
        return True
    letters = [c for c in s if c.isalpha()]
    return bool(letters) and not any(c.islower() for c in letters)  # ALL-CAPS title lines


def _ascii(s: str) -> str:
    s = s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    s = s.replace("\u201d", '"').replace("\u2014", "--").replace("\u2013", "-")
    if s.isascii():
        return s
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c))


def normalize_paragraph(text: str) -> str:
    """Clean a paragraph for the synthesiser: ASCII letters, apostrophes inside words,
    spaces and the punctuation ``, . ; : ! ?``; dashes and brackets become commas; hyphens
    become spaces; quotes and underscores go; a few abbreviations are spelt out. Characters
    outside that set (digits, ...) are kept so that the sentence filter can reject them."""
    s = _ascii(text).replace("_", "")
    for pat, rep in _ABBREVIATIONS:
        s = re.sub(pat, rep, s)
    s = re.sub(r"([.!?;:,])\s*--+", r"\1 ", s)  # "word.--Next" -> "word. Next"
    s = re.sub(r"\s*--+\s*", ", ", s)
    s = re.sub(r"[()\[\]]", ", ", s)
    s = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", s)  # good-humoured -> good humoured
    s = s.replace("-", " ")
    s = s.replace('"', " ")
    s = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", " ", s)  # quote marks, not apostrophes
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    s = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", s)  # ", ," -> ","
    s = re.sub(r"([.!?])\s*[,;:]", r"\1", s)
    s = re.sub(r"^[\s,;:]+", "", s)
    return s.strip()


def transcript_of(text: str) -> str:
    """LibriSpeech-style transcript: upper case, words separated by one space, no
    punctuation except apostrophes inside words."""
    t = re.sub(r"[^A-Za-z' ]", " ", text).upper()
    t = re.sub(r"(?<![A-Z])'|'(?![A-Z])", " ", t)
    return " ".join(t.split())


def split_sentences(paragraph: str) -> list[str]:
    """Split a normalised paragraph at ``. ! ?`` followed by a space and a capital."""
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph)
    return [p.strip(" ,;:") for p in parts if p.strip(" ,;:")]


def _split_long(sentence: str, max_words: int) -> list[str]:
    """Split a sentence with more than ``max_words`` words at ``;`` and ``:`` (greedily
    packing clauses up to ``max_words``). Pieces still too long are returned as they are."""
    if len(sentence.split()) <= max_words:
        return [sentence]
    clauses = [c.strip() for c in re.split(r"(?<=[;:])\s+", sentence) if c.strip()]
    out: list[str] = []
    cur = ""
    for c in clauses:
        cand = f"{cur} {c}".strip()
        if cur and len(cand.split()) > max_words:
            out.append(cur)
            cur = c
        else:
            cur = cand
    if cur:
        out.append(cur)
    return [re.sub(r"[;:,]$", ".", p) for p in out]


def _acceptable(text: str) -> bool:
    if not _ALLOWED.match(text):
        return False
    words = transcript_of(text).split()
    return not any(_ROMAN.match(w) for w in words)


def paragraph_sentences(paragraph: str, min_words: int = 6, max_words: int = 34) -> list[Sentence]:
    """Clean sentences of one raw paragraph, each ``min_words``..``max_words`` words long:
    short sentences are merged with the next one in the paragraph, long ones split at
    ``;``/``:``; pieces with digits, odd characters or Roman numerals are dropped."""
    pieces: list[str] = []
    for s in split_sentences(normalize_paragraph(paragraph)):
        pieces.extend(_split_long(s, max_words))
    out: list[Sentence] = []
    pending = ""
    for p in pieces:
        cur = f"{pending} {p}".strip() if pending else p
        n = len(transcript_of(cur).split())
        if n < min_words:
            pending = cur
            continue
        pending = ""
        if n <= max_words and _acceptable(cur):
            cur = cur[0].upper() + cur[1:]
            out.append(Sentence(cur, transcript_of(cur)))
    if pending and out and _acceptable(pending):  # a short tail joins the last sentence
        last = out[-1]
        merged = f"{last.text} {pending}"
        if len(transcript_of(merged).split()) <= max_words:
            out[-1] = Sentence(merged, transcript_of(merged))
    return out


def book_chapters(book: str, lines: list[str], **kwargs: int) -> list[BookChapter]:
    """Split one novel's lines into chapters of sentences (front matter before the first
    chapter heading is dropped; empty chapters are left out)."""
    chapters: list[BookChapter] = []
    paragraphs: list[str] = []
    para: list[str] = []
    number = 0

    def flush_para() -> None:
        if para:
            paragraphs.append(" ".join(x.strip() for x in para))
            para.clear()

    def flush_chapter() -> None:
        flush_para()
        if number > 0:
            sents = [s for p in paragraphs for s in paragraph_sentences(p, **kwargs)]
            if sents:
                chapters.append(BookChapter(book, number, sents))
        paragraphs.clear()

    for line in lines:
        s = line.strip()
        if not s:
            flush_para()
            continue
        if _is_heading(s):
            if re.match(r"^(CHAPTER|Chapter)\b", s):
                flush_chapter()
                number += 1
            else:
                flush_para()
            continue
        para.append(s)
    flush_chapter()
    return chapters


def austen_chapters(
    root: Pathlike | None = None, min_words: int = 6, max_words: int = 34
) -> list[BookChapter]:
    """All chapters of the six novels (in ``AUSTEN_BOOKS`` order) as clean sentences.
    Parsed once per process and package directory (a few seconds); later calls are cached."""
    pkg = find_janeaustenr(root).resolve()
    return list(_austen_chapters_cached(str(pkg), min_words, max_words))


@functools.lru_cache(maxsize=4)
def _austen_chapters_cached(pkg: str, min_words: int, max_words: int) -> tuple[BookChapter, ...]:
    novels = load_austen_novels(pkg)
    out: list[BookChapter] = []
    for book, lines in novels.items():
        out.extend(book_chapters(book, lines, min_words=min_words, max_words=max_words))
    return tuple(out)


def iter_sentences(chapters: list[BookChapter]) -> Iterator[tuple[BookChapter, Sentence]]:
    """Every (chapter, sentence) pair in order."""
    for ch in chapters:
        for s in ch.sentences:
            yield ch, s
