"""cpc.perf: process-wide allocator settings."""

from __future__ import annotations

import platform

from cpc.perf import keep_freed_memory


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
