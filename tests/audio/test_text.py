"""cpc.audio.text: the R XDR / lazy-load reader and the Austen sentence pipeline."""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import pytest

from cpc.audio import text as T

# ---- a tiny R XDR writer for fixtures (the inverse of the reader, written by hand) ----


def _i(v: int) -> bytes:
    return struct.pack(">i", v)


def _header() -> bytes:
    return b"X\n" + _i(3) + _i(0x040201) + _i(0x030500) + _i(5) + b"UTF-8"


def _charsxp(s: str | None) -> bytes:
    if s is None:
        return _i(9) + _i(-1)
    raw = s.encode()
    levels = 0x40 if s.isascii() else 0x08  # ASCII or UTF8 mask
    return _i(9 | (levels << 12)) + _i(len(raw)) + raw


def _strsxp(values: list[str | None], attrs: bytes = b"") -> bytes:
    flags = 16 | ((1 << 9) if attrs else 0)
    return _i(flags) + _i(len(values)) + b"".join(_charsxp(v) for v in values) + attrs


def _intsxp(values: list[int]) -> bytes:
    return _i(13) + _i(len(values)) + b"".join(_i(v) for v in values)


def _names_attr(names: list[str], first_symbol: bool = True) -> bytes:
    """A pairlist (names = <STRSXP>) terminated by NILVALUE; the tag is a new symbol or a
    reference to the first symbol seen (index 1)."""
    tag = _i(1) + _charsxp("names") if first_symbol else _i(255 | (1 << 8))
    return _i(2 | (1 << 10)) + tag + _strsxp(names) + _i(254)


def _vecsxp(items: list[bytes], names: list[str] | None = None, ref: bool = False) -> bytes:
    attrs = _names_attr(names, first_symbol=not ref) if names else b""
    flags = 19 | ((1 << 9) if names else 0)
    return _i(flags) + _i(len(items)) + b"".join(items) + attrs


def test_unserialize_character_vector_with_na_and_utf8() -> None:
    data = _header() + _strsxp(["EMMA", "", None, "caf\u00e9"])
    obj = T.unserialize_xdr(data)
    assert obj.sexptype == T.STRSXP
    assert obj.value == ["EMMA", "", None, "caf\u00e9"]


def test_unserialize_named_list_with_symbol_reference() -> None:
    inner = _vecsxp([_intsxp([0, 10]), _intsxp([10, 7])], names=["a", "b"])
    outer = _vecsxp([inner, _i(10) + _i(1) + _i(1)], names=["variables", "compressed"], ref=True)
    obj = T.unserialize_xdr(_header() + outer)
    d = obj.as_dict()
    assert list(d) == ["variables", "compressed"]
    assert {k: v.value for k, v in d["variables"].as_dict().items()} == {
        "a": [0, 10],
        "b": [10, 7],
    }
    assert d["compressed"].value == [True]


def test_unserialize_rejects_other_formats_and_truncation() -> None:
    with pytest.raises(T.RDataError, match="ASCII"):
        T.unserialize_xdr(b"A\n1\n")
    with pytest.raises(T.RDataError, match="truncated"):
        T.unserialize_xdr(_header() + _strsxp(["hello"])[:-2])


def _write_lazyload_db(d: Path, objects: dict[str, list[str]]) -> None:
    d.mkdir(parents=True)
    blob = b""
    index = []
    for vals in objects.values():
        payload = _header() + _strsxp(vals)
        rec = struct.pack(">I", len(payload)) + zlib.compress(payload)
        index.append(_intsxp([len(blob), len(rec)]))
        blob += rec
    (d / "Rdata.rdb").write_bytes(blob)
    variables = _vecsxp(index, names=list(objects))
    rdx = _vecsxp(
        [variables, _vecsxp([]), _i(10) + _i(1) + _i(1)],
        names=["variables", "references", "compressed"],
        ref=True,
    )
    (d / "Rdata.rdx").write_bytes(gzip.compress(_header() + rdx))


def test_read_lazyload_db_from_handmade_files(tmp_path: Path) -> None:
    _write_lazyload_db(tmp_path / "data", {"one": ["a", "b"], "two": ["x", None, "z"]})
    objs = T.read_lazyload_db(tmp_path / "data")
    assert {k: v.value for k, v in objs.items()} == {"one": ["a", "b"], "two": ["x", None, "z"]}


def test_read_lazyload_db_detects_corrupt_record(tmp_path: Path) -> None:
    _write_lazyload_db(tmp_path / "data", {"one": ["a", "b"]})
    rdb = tmp_path / "data" / "Rdata.rdb"
    raw = bytearray(rdb.read_bytes())
    raw[0:4] = struct.pack(">I", 9999)  # wrong uncompressed length
    rdb.write_bytes(bytes(raw))
    with pytest.raises(T.RDataError, match="record length"):
        T.read_lazyload_db(tmp_path / "data")


def test_missing_text_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        T.find_janeaustenr(tmp_path / "nowhere")
    assert "local/setup_env.sh" in str(e.value)
    assert "r-cran-janeaustenr" in str(e.value)


def test_normalisation_and_transcripts() -> None:
    p = T.normalize_paragraph(
        'Sorrow came--a gentle sorrow--but _not_ at all. "Mr. Weston\'s wedding-day," said '
        "Mrs Weston.--Miss Taylor (poor thing) married."
    )
    assert p == (
        "Sorrow came, a gentle sorrow, but not at all. Mister Weston's wedding day, said "
        "Missus Weston. Miss Taylor, poor thing, married."
    )
    assert T.transcript_of("Mister Weston's wedding day, said she!") == (
        "MISTER WESTON'S WEDDING DAY SAID SHE"
    )
    assert T.transcript_of("'Tis the Bennets' house.") == "TIS THE BENNETS HOUSE"


def test_paragraph_sentences_merge_split_and_reject() -> None:
    para = (
        "Yes. I think she will come, said Emma. "
        "He was born in 1790 and lived there long enough to know it. "
        + "; ".join(["she walked along the pleasant road for a while"] * 6)
        + "."
    )
    sents = T.paragraph_sentences(para, min_words=6, max_words=20)
    # "Yes." is merged with the next sentence; the year is rejected; the long one is split
    assert sents[0].transcript == "YES I THINK SHE WILL COME SAID EMMA"
    assert all("1790" not in s.text for s in sents)
    assert all(6 <= s.num_words <= 20 for s in sents)
    assert len(sents) == 1 + 3
    assert all(s.text[0].isupper() for s in sents)


def test_book_chapters_drop_headings_and_front_matter() -> None:
    lines = [
        "EMMA",
        "",
        "By Jane Austen",
        "",
        "VOLUME I",
        "",
        "CHAPTER I",
        "",
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home",
        "and happy disposition, seemed to unite some of the best blessings.",
        "",
        "CHAPTER II",
        "",
        "Mr. Weston was a native of Highbury, and born of a respectable family.",
        "",
        "THE END",
    ]
    chapters = T.book_chapters("emma", lines)
    assert [c.number for c in chapters] == [1, 2]
    assert chapters[0].sentences[0].transcript.startswith("EMMA WOODHOUSE HANDSOME CLEVER")
    assert chapters[1].sentences[0].text.startswith("Mister Weston was a native")
    assert all("END" not in s.transcript for c in chapters for s in c.sentences)


def _real_text_available() -> bool:
    try:
        T.find_janeaustenr()
        return True
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _real_text_available(), reason="janeaustenr not unpacked")
def test_real_novels_parse_into_clean_sentences() -> None:
    novels = T.load_austen_novels()
    assert list(novels) == list(T.AUSTEN_BOOKS)
    assert novels["emma"][0] == "EMMA"
    assert all(len(lines) > 5000 for lines in novels.values())
    chapters = T.austen_chapters()
    assert len(chapters) > 200
    sents = [s for c in chapters for s in c.sentences]
    assert len(sents) > 20000
    assert all(re.fullmatch(r"[A-Z']+( [A-Z']+)*", s.transcript) for s in sents)
    assert all(re.fullmatch(r"[A-Za-z' ,.;:!?]+", s.text) for s in sents)
    assert not any("CHAPTER" in s.transcript.split()[:1] for s in sents)
