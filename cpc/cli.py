"""Small pieces shared by the command-line scripts in local/ and egs/*/local/."""

from __future__ import annotations

import argparse


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
