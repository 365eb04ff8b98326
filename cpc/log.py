"""Logging in the icefall/lhotse format: ``2026-01-01 12:00:00,000 INFO [file.py:12] msg``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(
    log_file: str | os.PathLike | None = None, rank: int = 0, level: int = logging.INFO
) -> None:
    """Log to stderr (and to ``log_file`` if given). Ranks other than 0 log warnings only,
    to stderr only, prefixed with their rank."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = FORMAT if rank == 0 else f"[rank {rank}] {FORMAT}"
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    for h in handlers:
        h.setFormatter(logging.Formatter(fmt))
        root.addHandler(h)
    root.setLevel(level if rank == 0 else logging.WARNING)
