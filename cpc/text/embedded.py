"""The embedded default data, built from packages beside the environment, in the real layouts.

Books (BookCorpus layout: one plain-text ``<book>.txt`` per book, blank lines between
paragraphs), all public domain:
- Jane Austen's six novels (Debian ``r-cran-janeaustenr``, read by :mod:`cpc.corpora`), one
  file per novel, the package's lines as they are;
- the King James Bible (Debian ``bible-kjv``): its ``bible`` program prints every verse of
  ``Gen1:1-Rev22:21``; ``kjv.txt`` holds one verse per paragraph (chapter headings and verse
  numbers left out).

Evaluation data (SentEval layout, latin-1, one item per line), from the ``vaderSentiment``
3.3.2 sdist (MIT), whose ``additional_resources/hutto_ICWSM_2014.tar.gz`` holds sentiment
snippets with the mean rating of human raters (``id<TAB>rating<TAB>text``):
- ``MR-like/rt-polarity.{pos,neg}``: the Rotten-Tomatoes movie snippets (the MR sentences);
- ``CR-like/custrev.{pos,neg}``: the Amazon product-review snippets (the CR source).
Ratings are binarised by sign; zero ratings are dropped (counted). Characters latin-1
cannot hold are written as ``?`` (counted). These are "like" MR and CR, not the benchmarks:
other sentences (CR) and labels from ratings, so their numbers are not the paper's.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from cpc.corpora import AUSTEN_BOOKS, load_austen_novels
from cpc.io import Pathlike, write_text_atomic
from cpc.text.corpus import CorpusError

VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
HUTTO = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
#: embedded task -> (file in the hutto archive, SentEval directory, file stem)
VADER_TASKS = {
    "MR-like": ("movieReviewSnippets_GroundTruth.txt", "rt-polarity"),
    "CR-like": ("amazonReviewSnippets_GroundTruth.txt", "custrev"),
}
_VERSE = re.compile(r"^\s+\d+ (.*)$")


def _share_candidates(name: str) -> list[Path]:
    out = []
    venv = os.environ.get("CPC_VENV")
    if venv:
        out.append(Path(venv) / "share" / name)
    out.append(Path(sys.prefix) / "share" / name)
    return out


def find_share(name: str, what: str) -> Path:
    """``share/<name>`` beside the environment ($CPC_VENV, then the running venv);
    FileNotFoundError saying how to get it."""
    cands = _share_candidates(name)
    for c in cands:
        if c.exists():
            return c
    raise FileNotFoundError(
        f"{what} not found (looked in {', '.join(map(str, cands))}); run local/setup_env.sh, "
        "which places it beside the environment"
    )


def kjv_verses(root: Pathlike | None = None) -> list[str]:
    """Every verse of the KJV in order, printed by Debian's ``bible`` program."""
    root = Path(root) if root else find_share("bible-kjv", "the KJV Bible (bible-kjv)")
    prog, lib = root / "bin" / "bible", root / "lib"
    if not (prog.is_file() and (lib / "bible.data").is_file()):
        raise FileNotFoundError(f"{root}: expected bin/bible and lib/bible.data")
    out = subprocess.run(
        [str(prog), "-p", str(lib), "-l100000", "Gen1:1-Rev22:21"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    verses = [m.group(1).strip() for line in out.splitlines() if (m := _VERSE.match(line))]
    if len(verses) < 30000:
        raise CorpusError(f"{prog} printed {len(verses)} verses, expected 31102")
    return verses


def write_embedded_books(out_dir: Pathlike, janeaustenr: Pathlike | None = None) -> list[Path]:
    """``<out_dir>/<novel>.txt`` for the six novels and ``kjv.txt``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, lines in load_austen_novels(janeaustenr).items():
        p = out_dir / f"{name}.txt"
        write_text_atomic(p, "\n".join(lines) + "\n")
        paths.append(p)
    p = out_dir / "kjv.txt"
    write_text_atomic(p, "\n\n".join(kjv_verses()) + "\n")
    paths.append(p)
    logging.info(f"wrote {len(paths)} books ({', '.join(AUSTEN_BOOKS)}, kjv) to {out_dir}")
    return paths


def parse_rated_snippets(text: str, where: str) -> tuple[list[str], list[str], dict[str, int]]:
    """``id<TAB>rating<TAB>text`` lines -> (positive texts, negative texts, counts)."""
    pos: list[str] = []
    neg: list[str] = []
    zero = 0
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise CorpusError(f"{where} line {i}: expected id<TAB>rating<TAB>text")
        try:
            r = float(parts[1])
        except ValueError as e:
            raise CorpusError(f"{where} line {i}: rating {parts[1]!r} is not a number") from e
        t = " ".join(parts[2].split())
        if r > 0:
            pos.append(t)
        elif r < 0:
            neg.append(t)
        else:
            zero += 1
    return pos, neg, {"positive": len(pos), "negative": len(neg), "zero_dropped": zero}


def _latin1(lines: list[str]) -> tuple[bytes, int]:
    text = "\n".join(lines) + "\n"
    data = text.encode("latin-1", errors="replace")
    lost = sum(1 for c in text if ord(c) > 255)
    return data, lost


def write_embedded_senteval(out_dir: Pathlike, sdist: Pathlike | None = None) -> dict[str, Any]:
    """The MR-like and CR-like tasks in the SentEval layout under ``out_dir``; returns counts
    per task (positive, negative, zero ratings dropped, characters latin-1 cannot hold)."""
    out_dir = Path(out_dir)
    sdist = Path(sdist) if sdist else find_share(VADER_SDIST, "the vaderSentiment sdist")
    with tarfile.open(sdist) as outer:
        member = outer.extractfile(HUTTO)
        if member is None:
            raise CorpusError(f"{sdist}: no {HUTTO}")
        inner_bytes = member.read()
    counts: dict[str, Any] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for task, (fname, stem) in VADER_TASKS.items():
            f = inner.extractfile(f"hutto_ICWSM_2014/{fname}")
            if f is None:
                raise CorpusError(f"{sdist}:{HUTTO}: no {fname}")
            where = f"{sdist}:{fname}"
            pos, neg, c = parse_rated_snippets(f.read().decode("utf-8"), where)
            d = out_dir / task
            d.mkdir(parents=True, exist_ok=True)
            lost = 0
            for suffix, lines in (("pos", pos), ("neg", neg)):
                data, n = _latin1(lines)
                lost += n
                tmp = d / f".{stem}.{suffix}.tmp"
                tmp.write_bytes(data)
                tmp.replace(d / f"{stem}.{suffix}")
            counts[task] = {**c, "non_latin1_chars": lost, "source": fname}
            logging.info(
                f"{task}: {c['positive']} positive, {c['negative']} negative, "
                f"{c['zero_dropped']} zero-rated dropped -> {d}"
            )
    return counts
