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
    import torch

    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    want = bool(flags & {"avx512_bf16", "amx_bf16"})
    assert native_bf16("cpu") is want
    checks = [
        getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if all(checks):
        assert any(f() for f in checks) is want


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


def test_trim_if_grown_trims_only_after_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heap is handed back once resident memory grew by more than the limit since the
    last trim, measured from what is left after that trim; not on every call."""
    rss = iter([1000, 1050, 1100, 1101, 600, 650, 700, 701, 500])
    trims: list[int] = []
    monkeypatch.setattr(cpc.perf, "_rss_bytes", lambda: next(rss))
    monkeypatch.setattr(cpc.perf, "_trim_state", {})
    monkeypatch.setattr(cpc.perf, "_malloc_trim", lambda: trims.append(1) or True)
    got = [cpc.perf.trim_if_grown(limit_bytes=100) for _ in range(6)]
    # 1000 (base), 1050, 1100 (+100: not more), 1101 -> trim, 600 after it (new base),
    # 650, 700, 701 -> trim, 500 after it
    assert got == [False, False, False, True, False, False] and len(trims) == 1
    assert cpc.perf.trim_if_grown(limit_bytes=100) is True and len(trims) == 2
    assert cpc.perf._trim_state["base"] == 500


def test_trim_if_grown_really_trims_here() -> None:
    """On glibc the real call runs (no error) and reports it; elsewhere it is a no-op."""
    cpc.perf._trim_state.clear()
    assert cpc.perf.trim_if_grown(limit_bytes=1 << 40) is False  # sets the base only
    cpc.perf._trim_state["base"] = 0  # as if the process had grown from nothing
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert cpc.perf.trim_if_grown(limit_bytes=0) is glibc
    assert cpc.perf._trim_state["base"] > 0


def test_explicit_bf16_on_a_device_that_emulates_it_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from cpc.perf import warn_if_emulated

    monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu": False)
    with caplog.at_level("WARNING"):
        assert warn_if_emulated("bf16", "cpu", "--precision") is True
    assert "--precision: bf16 on cpu, which has no native bf16" in caplog.text
    assert "use precision auto or fp32" in caplog.text
    assert warn_if_emulated("fp32", "cpu") is False
    monkeypatch.setattr(cpc.perf, "native_bf16", lambda device="cpu": True)
    assert warn_if_emulated("bf16", "cpu") is False
