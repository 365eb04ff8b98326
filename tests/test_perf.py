"""cpc.perf: process-wide allocator settings and what precision ``auto`` means."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import cpc.perf
from cpc.perf import _cpu_flags, keep_freed_memory, native_bf16, resolve_precision


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert keep_freed_memory() is first
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True


def test_native_bf16_on_this_cpu_follows_its_instruction_set() -> None:
    """torch's CPUID checks and the kernel's flags agree: bf16 is native with AVX512-BF16 or
    AMX, and not on CPUs without them (e.g. AVX2 only)."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert native_bf16("cpu") is bool(flags & {"avx512_bf16", "amx_bf16"})


def test_resolve_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    for native in (True, False):
        monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu", n=native: n)
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        # explicit choices are kept whatever the machine
        assert resolve_precision("fp32", "cpu") == "fp32"
        assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"'fp16' is not one of auto, fp32, bf16"):
        resolve_precision("fp16")


def test_precision_command_line() -> None:
    """``python -m cpc.perf auto`` (what run.sh resolves its auto options with)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "cpc.perf", *args]
        return subprocess.run(cmd, capture_output=True, text=True)

    out = run("auto", "--device", "cpu")
    assert out.returncode == 0 and out.stdout == resolve_precision("auto", "cpu") + "\n"
    assert run("fp32").stdout == "fp32\n" and run("bf16").stdout == "bf16\n"
    bad = run("half")
    assert bad.returncode == 2 and "invalid choice: 'half'" in bad.stderr
