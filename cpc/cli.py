"""Small pieces shared by the command-line scripts in local/ and egs/*/local/."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the script docstring's layout and shows every option's default in ``--help``."""


def str2bool(v: str) -> bool:
    """``true``/``false`` (as the recipes' shell options spell booleans; also 1/0, yes/no)."""
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """An instance of the dataclass ``cls`` whose fields take the values of the parsed
    options of the same name (``--max-frames`` -> ``max_frames``); fields without such an
    option keep their defaults, ``extra`` sets others."""
    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**given, **extra})


def positive_int(v: str) -> int:
    """An ``int`` option that must be >= 1 (argparse ``type=``)."""
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {n}")
    return n
