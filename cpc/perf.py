"""Process-wide CPU performance settings shared by training and feature extraction.

:func:`keep_freed_memory` stops glibc's ``malloc`` from handing large blocks back to the
operating system. By default glibc serves every allocation above a threshold (at most
32 MiB) with a fresh ``mmap`` and unmaps it on ``free``; a CPC training step allocates and
frees activations of tens of MiB (the paper encoder's second layer: 8 x 512 x 4100 floats
= 67 MiB) dozens of times, so every step page-faults hundreds of MiB back in and the kernel
zeroes them. Measured on a 2-core AMD EPYC: the paper model's training step went from 1.40 s
to 1.13 s (one thread), and extraction from 17x to 26x real time, with identical results.
The price: the process keeps its peak heap size instead of shrinking after a large
allocation is freed (it reuses that memory for the next step).

:func:`trim_if_grown` is the counterpart for loops whose buffers change size every iteration
(feature extraction): it hands free heap memory back once the process has grown by a bound.

:func:`resolve_precision` says what a precision option of ``auto`` means on a device: bf16
where it computes bf16 natively (:func:`native_bf16`), fp32 elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done: bool | None = None


def keep_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Raise glibc's mmap and trim thresholds (``mallopt``) for this process, once.

    Allocations below ``mmap_threshold`` bytes come from the heap and freed memory is kept
    for reuse unless more than ``trim_threshold`` bytes are free at its top. Returns True if
    the settings are in effect (glibc only; a no-op elsewhere). Child processes forked later
    (DataLoader workers) inherit them.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
        ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))
        if not ok_mmap:  # older glibc caps the threshold at 32 MiB
            ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(32 << 20))
        _done = bool(ok_trim and ok_mmap)
    except (OSError, AttributeError) as e:
        logging.debug(f"mallopt unavailable: {e}")
    return _done


_trim_state: dict[str, int] = {}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def trim_if_grown(limit_bytes: int = 128 << 20) -> bool:
    """Hand free heap memory back (glibc ``malloc_trim(0)``) once this process's resident
    memory has grown by more than ``limit_bytes`` since the last trim (or the first call).

    For loops whose buffers change size from one iteration to the next (feature extraction:
    batches of utterances of varying length): glibc keeps freed blocks in the heap, and
    blocks of many sizes fragment it, so the process grows with the number of iterations
    although what it holds does not. A trim costs page faults when the memory is used again,
    so it runs only after such growth, not every iteration (trimming every 8 batches doubled
    an extraction's CPU time). Returns True if it trimmed; a no-op (False) without glibc or
    /proc."""
    rss = _rss_bytes()
    if not rss:
        return False
    base = _trim_state.setdefault("base", rss)
    if rss - base <= limit_bytes:
        return False
    trimmed = _malloc_trim()
    _trim_state["base"] = _rss_bytes() or rss
    return trimmed


def _malloc_trim() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(ctypes.c_size_t(0))
        return True
    except (OSError, AttributeError) as e:
        logging.debug(f"malloc_trim unavailable: {e}")
        return False


# --------------------------------------------------------------------------- precision

PRECISIONS = ("auto", "fp32", "bf16")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str = "cpu") -> bool:
    """Whether ``device`` computes in bfloat16 natively, so that bf16 autocast pays off.

    CPUs: AVX512-BF16 or AMX (oneDNN then runs bf16 convolutions and products in hardware).
    Without them autocast converts every operand and oneDNN emulates bf16 arithmetic: on a
    2-core AMD EPYC with AVX2 only, a ``cpc_small`` training step took 2.5 s in bf16 against
    0.21 s in fp32, and extraction was 6x slower. GPUs: ``torch.cuda.is_bf16_supported()``
    (Ampere and newer).

    On a CPU the kernel's flags (``/proc/cpuinfo``) answer without importing torch (run.sh
    asks once per call); torch's CPUID checks answer where there are none."""
    if str(device) == "cpu":
        flags = _cpu_flags()
        if flags:
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, name, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                pass
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _gpu_visible() -> bool:
    """torch.cuda.is_available(), without importing torch where no GPU driver is present
    (no NVIDIA device or driver entry, no ROCm /dev/kfd): about 1.7 s saved per call."""
    import glob

    if not (
        os.path.exists("/proc/driver/nvidia/gpus")
        or glob.glob("/dev/nvidia[0-9]*")
        or os.path.exists("/dev/kfd")
    ):
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``"fp32"`` or ``"bf16"`` for a precision option: ``"auto"`` is bf16 where ``device``
    has native bf16 (:func:`native_bf16`) and fp32 elsewhere; the others are returned as
    they are. Raises ValueError for anything else, naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def warn_if_emulated(precision: str, device: str = "cpu", what: str = "") -> bool:
    """Log a warning when ``precision`` is bf16 on a device that emulates it (several times
    slower than fp32 there, see :func:`native_bf16`); True if it warned."""
    if precision != "bf16" or native_bf16(device):
        return False
    logging.warning(
        f"{what + ': ' if what else ''}bf16 on {device}, which has no native bf16 (no "
        "AVX512-BF16/AMX): it is emulated and several times slower than fp32; use precision "
        "auto or fp32"
    )
    return True


def _main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m cpc.perf",
        description="Print the precision a precision option means on this machine: auto is "
        "bf16 where the device computes bf16 natively (CPUs with AVX512-BF16 or AMX, GPUs "
        "from Ampere on) and fp32 elsewhere.",
    )
    p.add_argument("precision", choices=PRECISIONS, help="the option's value")
    p.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1 ... (default: auto = cuda if a GPU is visible, else cpu)",
    )
    args = p.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if _gpu_visible() else "cpu"
    print(resolve_precision(args.precision, device))


if __name__ == "__main__":
    _main()
