"""Source text of the embedded speech corpus: Jane Austen's six novels (public domain) from
Debian's ``r-cran-janeaustenr`` data package, read without R.

The novels are read from R's lazy-load database by :mod:`cpc.corpora` (shared with the text
domain); the names it defines are re-exported here.

``austen_chapters()`` turns the lines into chapters of clean sentences: chapter and volume
headings, front matter and italics underscores are dropped, a few abbreviations are spelt
out (``Mr.`` -> ``Mister``), sentences with digits or unusual characters are skipped, short
sentences are merged and long ones split at ``;``/``:`` so that each reads in about 2-15 s.
Each ``Sentence`` has the text given to the synthesiser (with punctuation, for prosody) and
the transcript in LibriSpeech's style (upper case, no punctuation except apostrophes).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from cpc.corpora import (  # noqa: F401 - re-exported: the speech recipe's names
    AUSTEN_BOOKS,
    SYSTEM_JANEAUSTENR,
    RDataError,
    find_janeaustenr,
    load_austen_novels,
    read_lazyload_db,
)
from cpc.io import Pathlike


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
