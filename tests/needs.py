"""Test prerequisites installed by local/setup_env.sh (espeak-ng, the Jane Austen text).

``require(available, what)``, called in a test or fixture: nothing when ``available``; when
not, the test is skipped, except under CI (``CI=true``, as CI runs the tests), where it
fails, so that a broken environment cannot pass CI by skipping the tests that need it.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """True when the environment variable ``CI`` is ``true`` (any case)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip the running test (fail it under ``CI=true``) unless ``available``; ``what``
    names the missing prerequisite."""
    if available:
        return
    msg = f"missing {what}; local/setup_env.sh installs the test prerequisites"
    if in_ci():
        pytest.fail(f"{msg} (CI=true, so this fails instead of skipping)", pytrace=False)
    pytest.skip(msg)
