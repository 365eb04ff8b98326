"""Source text of the embedded speech corpus: Jane Austen's six novels (public domain) from
Debian's ``r-cran-janeaustenr`` data package, read without R.

The package stores each novel as an R character vector (one element per printed line) in
R's lazy-load database: ``data/Rdata.rdx`` (a gzip-compressed R serialization of
``list(variables = list(<name> = c(offset, length), ...), references, compressed)``) and
``data/Rdata.rdb`` (records at those offsets: a 4-byte big-endian uncompressed length, then a
zlib stream holding an R XDR serialization). ``unserialize_xdr`` is a minimal reader of R's
XDR serialization format (version 2 and 3) for the types such data use.

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
import gzip
import lzma
import os
import re
import struct
import sys
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """An R data file could not be parsed."""


# ---------------------------------------------------------------------------------------------
# R XDR unserialization
# ---------------------------------------------------------------------------------------------

# SEXP types (R Internals, "Serialization formats")
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP = 0, 1, 2, 3, 4
LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, VECSXP, EXPRSXP = 10, 13, 14, 15, 16, 19, 20
CHARSXP = 9
# pseudo-SEXP types used only in serializations
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP = 255, 254, 253, 242, 241
MISSINGARG_SXP, BASENAMESPACE_SXP = 251, 247

_IS_OBJECT, _HAS_ATTR, _HAS_TAG = 1 << 8, 1 << 9, 1 << 10
_UTF8_MASK, _LATIN1_MASK, _ASCII_MASK = 1 << 3, 1 << 2, 1 << 6
_NA_INTEGER = -(2**31)


@dataclass
class RObject:
    """An unserialized R value.

    sexptype: the R type code (``STRSXP`` = 16, ``VECSXP`` = 19, ...).
    value: a Python list for vectors (``None`` for NA), a str for symbols, None for NULL.
    attributes: attribute name -> ``RObject`` (e.g. ``"names"``).
    """

    sexptype: int
    value: Any
    attributes: dict[str, RObject] = field(default_factory=dict)

    @property
    def names(self) -> list[str | None] | None:
        """The ``names`` attribute as a list of str, or None."""
        n = self.attributes.get("names")
        return None if n is None else list(n.value)

    def as_dict(self) -> dict[str, RObject]:
        """A named list as ``{name: element}``."""
        names = self.names
        if names is None or not isinstance(self.value, list):
            raise RDataError(f"R object of type {self.sexptype} has no names")
        return dict(zip(names, self.value))


class _XdrReader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.refs: list[RObject] = []
        self.native_encoding = "UTF-8"

    def fail(self, msg: str) -> RDataError:
        return RDataError(f"{self.what}: {msg} (at byte {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated: wanted {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints, upper and lower 32 bits
            hi, lo = struct.unpack(">II", self.take(8))
            return (hi << 32) | lo
        if n < 0:
            raise self.fail(f"negative vector length {n}")
        return n

    def header(self) -> None:
        fmt = self.take(2)
        if fmt != b"X\n":
            kind = {b"A\n": "ASCII", b"B\n": "native binary"}.get(fmt, repr(fmt))
            raise self.fail(f"not an R XDR serialization (format {kind}); only XDR is supported")
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # minimal R version to read it
        if version == 3:
            n = self.int()
            self.native_encoding = self.take(n).decode("ascii", errors="replace")
        elif version != 2:
            raise self.fail(f"unsupported serialization version {version}")

    def charsxp(self, levels: int) -> str | None:
        n = self.int()
        if n == -1:
            return None
        raw = self.take(n)
        if levels & _LATIN1_MASK:
            return raw.decode("latin-1")
        if levels & (_UTF8_MASK | _ASCII_MASK) or self.native_encoding.upper() in ("UTF-8", "UTF8"):
            return raw.decode("utf-8", errors="replace")
        return raw.decode("latin-1")

    def attributes(self) -> dict[str, RObject]:
        attr = self.item()
        out: dict[str, RObject] = {}
        if attr.sexptype != LISTSXP:
            raise self.fail(f"attributes are not a pairlist (type {attr.sexptype})")
        for tag, value in attr.value:
            out[str(tag)] = value
        return out

    def item(self) -> RObject:
        flags = self.int()
        t = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & _HAS_ATTR)
        has_tag = bool(flags & _HAS_TAG)
        if t == NILVALUE_SXP:
            return RObject(NILSXP, None)
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, BASENAMESPACE_SXP, MISSINGARG_SXP):
            return RObject(t, None)
        if t == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                raise self.fail(f"reference {idx} to an unknown object")
            return self.refs[idx - 1]
        if t == SYMSXP:
            name = self.item()
            obj = RObject(SYMSXP, name.value)
            self.refs.append(obj)
            return obj
        if t == CHARSXP:
            return RObject(CHARSXP, self.charsxp(levels))
        if t == LISTSXP:  # pairlist: (attr) (tag) car cdr, the cdr chain iterated
            cells: list[tuple[str | None, RObject]] = []
            attrs: dict[str, RObject] = {}
            while True:
                if has_attr:
                    attrs.update(self.attributes())
                tag = self.item().value if has_tag else None
                cells.append((tag, self.item()))
                flags = self.int()
                t = flags & 0xFF
                if t == NILVALUE_SXP:
                    break
                if t != LISTSXP:
                    raise self.fail(f"pairlist ends in type {t}")
                has_attr, has_tag = bool(flags & _HAS_ATTR), bool(flags & _HAS_TAG)
            return RObject(LISTSXP, cells, attrs)
        if t == STRSXP:
            n = self.length()
            values: list[Any] = []
            for _ in range(n):
                f = self.int()
                if f & 0xFF != CHARSXP:
                    raise self.fail(f"string vector element of type {f & 0xFF}")
                values.append(self.charsxp(f >> 12))
        elif t in (LGLSXP, INTSXP):
            n = self.length()
            ints = struct.unpack(f">{n}i", self.take(4 * n))
            values = [None if v == _NA_INTEGER else v for v in ints]
            if t == LGLSXP:
                values = [None if v is None else bool(v) for v in values]
        elif t == REALSXP:
            n = self.length()
            values = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif t in (VECSXP, EXPRSXP):
            n = self.length()
            values = [self.item() for _ in range(n)]
        else:
            raise self.fail(f"unsupported R object type {t}")
        attrs = self.attributes() if has_attr else {}
        return RObject(t, values, attrs)


def unserialize_xdr(data: bytes, what: str = "R data") -> RObject:
    """Parse one R XDR serialization (what ``saveRDS``/``serialize`` write, uncompressed).

    Supports NULL, symbols, pairlists, logical/integer/double/character vectors and lists,
    with attributes. ``what`` names the source in error messages. Raises ``RDataError``.
    """
    r = _XdrReader(data, what)
    r.header()
    return r.item()


def _decompress_record(raw: bytes, compressed: int, what: str) -> bytes:
    """One lazy-load record: 4-byte big-endian length, then (R's ``compressed`` type) a zlib
    stream (1), or a type byte and a bzip2/xz/zlib/raw stream (2, 3)."""
    if len(raw) < 4:
        raise RDataError(f"{what}: record shorter than its 4-byte header")
    (n,) = struct.unpack(">I", raw[:4])
    body = raw[4:]
    try:
        if compressed in (2, 3):
            kind, body = body[:1], body[1:]
            if kind == b"2":
                out = bz2.decompress(body)
            elif kind == b"X":
                out = lzma.decompress(body)
            elif kind == b"Z":
                out = zlib.decompress(body)
            elif kind == b"0":
                out = body
            else:
                raise RDataError(f"{what}: unknown record compression {kind!r}")
        else:
            out = zlib.decompress(body)
    except (zlib.error, OSError, lzma.LZMAError) as e:
        raise RDataError(f"{what}: cannot decompress record: {e}") from e
    if len(out) != n:
        raise RDataError(f"{what}: record length {len(out)}, header says {n}")
    return out


def read_lazyload_db(data_dir: Pathlike) -> dict[str, RObject]:
    """Read every object of an R lazy-load database ``<data_dir>/Rdata.{rdx,rdb}``.

    Returns ``{object name: RObject}``. Raises ``FileNotFoundError`` or ``RDataError``.
    """
    data_dir = Path(data_dir)
    rdx, rdb = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    for p in (rdx, rdb):
        if not p.is_file():
            raise FileNotFoundError(f"missing {p}")
    raw = rdx.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    elif raw[:2] != b"X\n":  # saveRDS with compress=bzip2/xz, or a bare zlib record
        for dec in (bz2.decompress, lzma.decompress, lambda b: zlib.decompress(b[4:])):
            try:
                raw = dec(raw)
                break
            except Exception:  # noqa: BLE001 - try the next format
                continue
    index = unserialize_xdr(raw, str(rdx)).as_dict()
    if "variables" not in index:
        raise RDataError(f"{rdx}: no 'variables' entry in the index")
    comp = index.get("compressed")
    compressed = 1
    if comp is not None and comp.value:
        v = comp.value[0]
        compressed = 1 if v is True else int(v or 0)
    blob = rdb.read_bytes()
    out: dict[str, RObject] = {}
    for name, loc in index["variables"].as_dict().items():
        offset, length = (int(v) for v in loc.value[:2])
        what = f"{rdb} object {name!r}"
        if offset < 0 or offset + length > len(blob):
            raise RDataError(f"{what}: offset {offset}+{length} beyond the file's {len(blob)}")
        data = _decompress_record(blob[offset : offset + length], compressed, what)
        out[str(name)] = unserialize_xdr(data, what)
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
        if obj.sexptype != STRSXP:
            raise RDataError(f"{pkg}: {name} is R type {obj.sexptype}, not a character vector")
        out[name] = [s or "" for s in obj.value]
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
