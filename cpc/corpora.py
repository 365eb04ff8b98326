"""Public-domain book texts shipped beside the environment, read without their native tools.

Jane Austen's six novels come from Debian's ``r-cran-janeaustenr`` data package: each novel is
an R character vector (one element per printed line) in R's lazy-load database,
``data/Rdata.rdx`` (a gzip-compressed R serialization of ``list(variables = list(<name> =
c(offset, length), ...), references, compressed)``) and ``data/Rdata.rdb`` (records at those
offsets: a 4-byte big-endian uncompressed length, then a zlib stream holding an R
serialization). :func:`read_lazyload_db` unpacks that framing and parses each serialization
with the ``rdata`` library; :func:`load_austen_novels` returns the novels as lines of text.

Domain-neutral: the speech domain turns the novels into read sentences
(:mod:`cpc.audio.text`), the text domain into books of a plain-text corpus.
"""

from __future__ import annotations

import bz2
import lzma
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
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
