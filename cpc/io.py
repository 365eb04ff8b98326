"""Atomic file output: every file a stage trusts is written to a temporary path beside its
destination and renamed into place, so a killed process leaves the old file or none."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Pathlike = str | os.PathLike


def _tmp_name(path: Path) -> Path:
    # The suffix is kept (".tmp123.cuts.jsonl.gz"): lhotse infers the format from it.
    return path.with_name(f".tmp{os.getpid()}.{path.name}")


@contextmanager
def atomic_path(path: Pathlike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    Works for files and directories (a directory replaces the old one as a whole). On error
    the temporary path is removed and ``path`` is left as it was. The parent directory must
    be writable; otherwise a ``PermissionError`` names it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # PermissionError, NotADirectoryError, FileExistsError, ...
        raise PermissionError(
            f"cannot create output directory {path.parent}: {e.strerror or e}; "
            "choose a writable location or fix its permissions"
        ) from e
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(
            f"output directory {path.parent} is not writable; "
            "choose a writable location or fix its permissions"
        )
    tmp = _tmp_name(path)
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            old = path.with_name(f".old{os.getpid()}.{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def atomic_open(path: Pathlike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """``open()`` that writes to a temporary file and renames it onto ``path`` on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Pathlike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json_atomic(path: Pathlike, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def temp_dir_near(path: Pathlike) -> Path:
    """A fresh temporary directory on the same filesystem as ``path`` (for renames)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))


def sha256_file(path: Pathlike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of a JSON-serialisable object (keys sorted: equal objects, equal hashes)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def command_line() -> str:
    """The running command, shell-quoted (for info.json, cmd.txt and logs)."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
