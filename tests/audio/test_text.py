"""cpc.audio.text: the R lazy-load database reader (on rdata) and the Austen sentence pipeline."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cpc.audio import text as T
from tests.needs import require

# ---- a tiny R XDR serialization writer for fixtures (what R's serialize() writes) ----


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


def _lglsxp(values: list[int]) -> bytes:
    return _i(10) + _i(len(values)) + b"".join(_i(v) for v in values)


def _record(payload: bytes, compressed: int, kind: bytes = b"Z") -> bytes:
    """A lazy-load record as R writes it (R_compress1/2/3), or the bare payload for 0."""
    if not compressed:
        return payload
    if compressed not in (2, 3):  # R_compress1: zlib, no type byte
        return struct.pack(">I", len(payload)) + zlib.compress(payload)
    codec = {b"Z": zlib.compress, b"2": bz2.compress, b"X": lzma.compress, b"0": bytes}
    return struct.pack(">I", len(payload)) + kind + codec[kind](payload)


def _write_lazyload_db(
    d: Path,
    objects: dict[str, bytes | list[str | None]],
    compressed: int = 1,
    kind: bytes = b"Z",
    rdx_codec: Callable[[bytes], bytes] = gzip.compress,
) -> None:
    """An R lazy-load database: character vectors given as lists, other objects as their
    XDR bytes (without the header)."""
    d.mkdir(parents=True)
    blob = b""
    index = []
    for vals in objects.values():
        payload = _header() + (_strsxp(vals) if isinstance(vals, list) else vals)
        rec = _record(payload, compressed, kind)
        index.append(_intsxp([len(blob), len(rec)]))
        blob += rec
    (d / "Rdata.rdb").write_bytes(blob)
    variables = _vecsxp(index, names=list(objects))
    comp = _lglsxp([1]) if compressed == 1 else (_lglsxp([0]) if not compressed else None)
    rdx = _vecsxp(
        [variables, _vecsxp([]), comp or _intsxp([compressed])],
        names=["variables", "references", "compressed"],
        ref=True,
    )
    (d / "Rdata.rdx").write_bytes(rdx_codec(_header() + rdx))


def test_read_lazyload_db_from_handmade_files(tmp_path: Path) -> None:
    objects: dict[str, bytes | list[str | None]] = {
        "one": ["a", "b"],
        "two": ["x", None, "z"],
        "utf8": ["caf\u00e9", "", "\u201cquoted\u201d"],
        "empty": [],
        "ints": _intsxp([3, -7, 11]),
    }
    _write_lazyload_db(tmp_path / "data", objects)
    objs = T.read_lazyload_db(tmp_path / "data")
    assert list(objs) == ["one", "two", "utf8", "empty", "ints"]
    assert objs["one"] == ["a", "b"]
    assert objs["two"] == ["x", None, "z"]
    assert objs["utf8"] == ["caf\u00e9", "", "\u201cquoted\u201d"]
    assert objs["empty"] == []
    assert all(type(v) is str for k in ("one", "utf8") for v in objs[k])
    assert np.asarray(objs["ints"]).tolist() == [3, -7, 11]  # other types: as rdata gives them


@pytest.mark.parametrize(
    ("compressed", "kind"),
    [(0, b""), (1, b""), (2, b"2"), (2, b"Z"), (2, b"0"), (3, b"X"), (3, b"Z"), (3, b"2")],
)
def test_read_lazyload_db_record_framings(tmp_path: Path, compressed: int, kind: bytes) -> None:
    _write_lazyload_db(tmp_path / "data", {"v": ["p", None, "q"]}, compressed, kind)
    assert T.read_lazyload_db(tmp_path / "data") == {"v": ["p", None, "q"]}


@pytest.mark.parametrize(
    "codec", [gzip.compress, bz2.compress, lzma.compress, bytes], ids=["gz", "bz2", "xz", "raw"]
)
def test_read_lazyload_db_index_compressions(
    tmp_path: Path, codec: Callable[[bytes], bytes]
) -> None:
    _write_lazyload_db(tmp_path / "data", {"v": ["w"]}, rdx_codec=codec)
    assert T.read_lazyload_db(tmp_path / "data") == {"v": ["w"]}


def test_read_lazyload_db_detects_wrong_record_length(tmp_path: Path) -> None:
    _write_lazyload_db(tmp_path / "data", {"one": ["a", "b"]})
    rdb = tmp_path / "data" / "Rdata.rdb"
    raw = bytearray(rdb.read_bytes())
    true_length = struct.unpack(">I", raw[0:4])[0]
    raw[0:4] = struct.pack(">I", 9999)  # wrong uncompressed length
    rdb.write_bytes(bytes(raw))
    with pytest.raises(T.RDataError) as e:
        T.read_lazyload_db(tmp_path / "data")
    assert str(e.value) == f"{rdb} object 'one': record length {true_length}, header says 9999"


def test_read_lazyload_db_detects_corrupt_record(tmp_path: Path) -> None:
    _write_lazyload_db(tmp_path / "data", {"one": ["a"], "two": ["b", "c"]})
    rdb = tmp_path / "data" / "Rdata.rdb"
    raw = bytearray(rdb.read_bytes())
    n1 = 4 + len(zlib.compress(_header() + _strsxp(["a"])))
    raw[n1 + 4 : n1 + 6] = b"\xff\xff"  # the zlib header of the second record
    rdb.write_bytes(bytes(raw))
    with pytest.raises(T.RDataError, match=rf"^{re.escape(str(rdb))} object 'two': cannot decomp"):
        T.read_lazyload_db(tmp_path / "data")


def test_read_lazyload_db_detects_record_that_is_not_a_serialization(tmp_path: Path) -> None:
    d = tmp_path / "data"
    _write_lazyload_db(d, {"ok": ["a"], "one": _i(99)})  # framed right; no R type 99
    with pytest.raises(T.RDataError, match=r"object 'one': not a readable R serialization"):
        T.read_lazyload_db(d)


def test_read_lazyload_db_index_errors(tmp_path: Path) -> None:
    d = tmp_path / "data"
    _write_lazyload_db(d, {"one": ["a"]})
    rdx = d / "Rdata.rdx"
    rdx.write_bytes(gzip.compress(_header() + _vecsxp([_intsxp([1])], names=["other"])))
    with pytest.raises(T.RDataError, match=rf"^{re.escape(str(rdx))}: no 'variables' entry"):
        T.read_lazyload_db(d)
    rdx.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(T.RDataError, match=rf"^{re.escape(str(rdx))}: not a readable R serial"):
        T.read_lazyload_db(d)
    rdx.unlink()
    with pytest.raises(FileNotFoundError, match="Rdata.rdx"):
        T.read_lazyload_db(d)


def _fake_package(root: Path, emma: bytes | list[str | None]) -> Path:
    novels: dict[str, bytes | list[str | None]] = {b: [b.upper(), "", "x"] for b in T.AUSTEN_BOOKS}
    novels["emma"] = emma
    _write_lazyload_db(root / "data", novels)
    return root


def test_load_austen_novels_from_a_handmade_package(tmp_path: Path) -> None:
    pkg = _fake_package(tmp_path / "pkg", ["EMMA", None, "", "Emma Woodhouse"])
    novels = T.load_austen_novels(pkg)
    assert list(novels) == list(T.AUSTEN_BOOKS)
    assert novels["emma"] == ["EMMA", "", "", "Emma Woodhouse"]  # NA -> ""
    assert novels["persuasion"] == ["PERSUASION", "", "x"]


def test_load_austen_novels_rejects_an_object_that_is_not_text(tmp_path: Path) -> None:
    pkg = _fake_package(tmp_path / "pkg", _intsxp([1, 2]))
    with pytest.raises(T.RDataError) as e:
        T.load_austen_novels(pkg)
    assert str(e.value).startswith(f"{pkg / 'data' / 'Rdata.rdb'} object 'emma': not a character")


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


def test_real_novels_parse_into_clean_sentences() -> None:
    require(_real_text_available(), "the Jane Austen text (Debian's r-cran-janeaustenr)")
    novels = T.load_austen_novels()
    assert list(novels) == list(T.AUSTEN_BOOKS)
    assert novels["emma"][:3] == ["EMMA", "", "By Jane Austen"]
    assert {k: len(v) for k, v in novels.items()} == {  # janeaustenr 1.0.0's line counts
        "sensesensibility": 12624,
        "prideprejudice": 13030,
        "mansfieldpark": 15349,
        "emma": 16235,
        "northangerabbey": 7856,
        "persuasion": 8328,
    }
    assert all(type(line) is str for lines in novels.values() for line in lines)
    chapters = T.austen_chapters()
    assert len(chapters) > 200
    sents = [s for c in chapters for s in c.sentences]
    assert len(sents) > 20000
    assert all(re.fullmatch(r"[A-Z']+( [A-Z']+)*", s.transcript) for s in sents)
    assert all(re.fullmatch(r"[A-Za-z' ,.;:!?]+", s.text) for s in sents)
    assert not any("CHAPTER" in s.transcript.split()[:1] for s in sents)
