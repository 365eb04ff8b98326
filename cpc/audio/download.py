"""Stage -1 of ``egs/librispeech100``: download LibriSpeech parts and, optionally, the CPC
release's phone labels.

Archives. Each part (``train-clean-100``, and ``dev-clean``/``test-clean`` for downstream use;
every part of the corpus is accepted) is fetched from ``<base_url>/12/<part>.tar.gz`` (the
OpenSLR layout, as lhotse's ``download_librispeech`` builds it; a mirror with the same layout
works) with lhotse's resumable download: a partial archive left by an interrupted run is
continued with an HTTP range request, not restarted. lhotse does not verify archives, so
every archive's SHA-256 is checked against the published value (:data:`LIBRISPEECH_SHA256`,
or a ``sha256sum``-format file for other archives) BEFORE it is unpacked: a corrupted archive
is refused by name and moved aside to ``<archive>.corrupt``, so the next run downloads it
afresh. A verified archive is then unpacked by ``lhotse.recipes.download_librispeech``, which
marks the part complete (``LibriSpeech/<part>/.completed``); a complete part is never fetched
again.

Labels. With a labels URL, ``converted_aligned_phones.txt``, ``train_split.txt`` and
``test_split.txt`` (and ``phones.txt`` when the URL has one) are fetched from it. Either way
(fetched or given) the labels are checked by content against the corpus
(:func:`check_labels`): class ids in range, train and test disjoint and non-empty, every
split utterance labelled and present in the corpus part; the sizes are returned.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path
from typing import Any

from cpc.audio.librispeech import MAX_EXAMPLES, DataPrepError
from cpc.io import Pathlike, sha256_file

#: SHA-256 of the LibriSpeech archives as published on OpenSLR (resource 12).
LIBRISPEECH_SHA256 = {
    "dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other.tar.gz": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other.tar.gz": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360.tar.gz": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500.tar.gz": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
DEFAULT_BASE_URL = "http://www.openslr.org/resources"
LABEL_FILES = ("converted_aligned_phones.txt", "train_split.txt", "test_split.txt")
OPTIONAL_LABEL_FILES = ("phones.txt",)


class DownloadError(DataPrepError):
    """A download that failed or an archive that failed its check (the message names the
    file and the fix)."""


def read_checksums(path: Pathlike) -> dict[str, str]:
    """A ``sha256sum`` output file (``<hex>  <name>`` per line) -> ``{name: hex}``."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or len(fields[0]) != 64:
            raise DownloadError(
                f"{path}:{lineno}: expected '<sha256 hex>  <archive name>' (sha256sum output)"
            )
        out[Path(fields[1].lstrip("*")).name] = fields[0].lower()
    return out


def archive_url(base_url: str, part: str) -> str:
    """Where lhotse's download_librispeech fetches ``part`` from."""
    return f"{base_url.rstrip('/')}/12/{part}.tar.gz"


def remote_size(url: str) -> int | None:
    """The size the server announces for ``url`` (a HEAD request), or None."""
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as r:
            n = r.headers.get("Content-Length")
            return int(n) if n is not None else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _fetch(url: str, dest: Path) -> None:
    """lhotse's resumable download, then a size check: a connection that drops mid-way ends
    lhotse's read loop without an error, so the announced size decides whether to resume."""
    from lhotse.utils import resumable_download

    def kept(why: str) -> DownloadError:
        have = dest.stat().st_size if dest.is_file() else 0
        return DownloadError(
            f"downloading {url} to {dest} failed ({why}); the {have} bytes so far are kept: "
            "run the stage again to resume, or pass another --download-url (a mirror)"
        )

    try:
        resumable_download(url, filename=dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise kept(str(e)) from e
    total = remote_size(url)
    if total is not None and dest.stat().st_size < total:
        raise kept(f"the connection ended after {dest.stat().st_size} of {total} bytes")


def verify_archive(path: Path, expected: str) -> None:
    """Raise DownloadError (and move ``path`` to ``<path>.corrupt``) unless its SHA-256 is
    ``expected``."""
    got = sha256_file(path)
    if got != expected.lower():
        bad = path.with_name(path.name + ".corrupt")
        os.replace(path, bad)
        raise DownloadError(
            f"{path}: SHA-256 {got}, expected {expected}: the archive is corrupted or not "
            f"the published one; it was moved to {bad} and was NOT unpacked. Run the stage "
            "again to download it afresh, or pass another --download-url (a mirror)"
        )


def download_parts(
    target_dir: Pathlike,
    parts: list[str],
    base_url: str = DEFAULT_BASE_URL,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Download, verify and unpack LibriSpeech ``parts`` into ``target_dir/LibriSpeech``
    (see the module docstring). Returns the LibriSpeech root."""
    from lhotse.recipes.librispeech import LIBRISPEECH, download_librispeech

    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    sums = {**LIBRISPEECH_SHA256, **(checksums or {})}
    for part in parts:
        if part not in LIBRISPEECH:
            raise DownloadError(
                f"unknown LibriSpeech part '{part}'; choose from {', '.join(LIBRISPEECH)}"
            )
        done = target / "LibriSpeech" / part / ".completed"
        if done.is_file():
            logging.info(f"{part}: already downloaded and unpacked ({done})")
            continue
        name = f"{part}.tar.gz"
        archive = target / name
        expected = sums.get(name)
        if expected is None:
            raise DownloadError(f"no SHA-256 known for {name}: give one in --download-checksums")
        if archive.is_file() and sha256_file(archive) == expected:
            logging.info(f"{archive}: complete and verified")
        else:
            url = archive_url(base_url, part)
            logging.info(f"downloading {url} -> {archive} (resuming if partial)")
            _fetch(url, archive)
            verify_archive(archive, expected)
            logging.info(f"{archive}: SHA-256 verified")
        size = archive.stat().st_size
        logging.info(f"unpacking {archive}")
        try:  # finds the archive complete (a range request past its end) and unpacks it
            download_librispeech(target, dataset_parts=[part], base_url=base_url.rstrip("/"))
        except (urllib.error.URLError, OSError, EOFError) as e:
            raise DownloadError(f"unpacking {archive} failed: {e}; run the stage again") from e
        if archive.stat().st_size != size:  # a server that ignores range requests appends
            done.unlink(missing_ok=True)
            raise DownloadError(
                f"{archive} changed while unpacking (the server at {base_url} ignored a range "
                "request); delete it and run the stage again, or use another --download-url"
            )
    return target / "LibriSpeech"


def download_labels(url: str, labels_dir: Pathlike) -> Path:
    """Fetch the CPC release's label files from the directory URL ``url``."""
    import urllib.request

    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    for name in (*LABEL_FILES, *OPTIONAL_LABEL_FILES):
        src = f"{url.rstrip('/')}/{name}"
        dest = labels_dir / name
        tmp = dest.with_name(f".{name}.tmp")
        try:
            with urllib.request.urlopen(src) as r, open(tmp, "wb") as f:
                while block := r.read(1 << 20):
                    f.write(block)
        except urllib.error.HTTPError as e:
            tmp.unlink(missing_ok=True)
            if name in OPTIONAL_LABEL_FILES and e.code == 404:
                continue
            raise DownloadError(f"downloading {src} failed ({e}); check --labels-url") from e
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise DownloadError(f"downloading {src} failed ({e}); check --labels-url") from e
        os.replace(tmp, dest)
        logging.info(f"{src} -> {dest}")
    return labels_dir


def _corpus_utterances(part_dir: Path) -> set[str]:
    return {p.name[: -len(".flac")] for p in part_dir.glob("*/*/*.flac")}


def check_labels(labels_dir: Pathlike, part_dir: Pathlike) -> dict[str, Any]:
    """Check phone labels in the CPC release format by content against a corpus part.

    Class ids must be in range and the splits disjoint (both checked while reading), both
    splits non-empty, every split utterance labelled and present in ``part_dir``. Returns
    the sizes: classes, labelled utterances, train/test utterances, corpus utterances and
    the share of them the splits cover. Raises DataPrepError naming the file and examples."""
    from cpc.audio.labels import ALIGNMENT_FILE, SPLIT_FILES, read_cpc_labels

    labels_dir, part_dir = Path(labels_dir), Path(part_dir)
    labels = read_cpc_labels(labels_dir)
    corpus = _corpus_utterances(part_dir)
    for split, ids in labels.splits.items():
        where = labels_dir / SPLIT_FILES[split]
        if not ids:
            raise DataPrepError(f"{where} lists no utterance; re-download the labels")
        for what, missing in (
            (
                f"no line in {labels_dir / ALIGNMENT_FILE}",
                [u for u in ids if u not in labels.alignments],
            ),
            (f"no audio in {part_dir}", [u for u in ids if u not in corpus]),
        ):
            if missing:
                raise DataPrepError(
                    f"{where}: {len(missing)} of {len(ids)} utterances have {what}, e.g. "
                    f"{', '.join(missing[:MAX_EXAMPLES])}: the labels are not those of this "
                    "corpus part (check --labels-dir / --labels-url and --corpus-dir)"
                )
    covered = len(set(labels.splits["train"]) | set(labels.splits["test"]))
    return {
        "labels_dir": str(labels_dir),
        "num_classes": labels.num_classes,
        "labelled_utterances": len(labels.alignments),
        "train_utterances": len(labels.splits["train"]),
        "test_utterances": len(labels.splits["test"]),
        "corpus_utterances": len(corpus),
        "corpus_share_in_splits": round(covered / max(len(corpus), 1), 4),
    }
