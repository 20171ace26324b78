"""The process's C allocator: keep the heap's freed memory instead of handing it back each step.

glibc gives freed memory back to the kernel whenever more than its trim threshold is free at the
top of the heap. A training step frees tens of megabytes of activations at its end, so the
next step page-faults them in again, a 4 KiB page at a time, each page zeroed by the kernel.
`keep_freed_memory()` raises the trim threshold to 1 GiB and pins the mmap threshold at
32 MiB — the ceiling glibc's own adaptive threshold reaches — because setting either turns the
adaptation off (left alone, blocks from 128 KiB up would be mapped afresh every time).
Blocks above 32 MiB are still mapped and returned on free: raising that limit too removes their
page faults but fragments the heap — posix_memalign, which PyTorch calls, cannot reuse a freed
block of the very size it asks for, so the heap grows by a block per step before it settles
(measured in docs/results.md). Large blocks are avoided in the training step instead (the
masked-LM loss runs in row chunks).

The `nlpattn` command applies it at start-up; `NLPATTN_KEEP_FREED_MEMORY=0` turns it off.
Library users call `keep_freed_memory()` themselves; importing nlpattn changes nothing.

PyTorch's own switch for huge pages (THP_MEM_ALLOC_ENABLE=1: blocks of 2 MiB and more 2 MiB-
aligned and madvised) is left to the user: with the chunked losses in place it gained 2 % on
pretraining for 20 % more peak memory (docs/results.md). `memory_settings()` reports both.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

ENV_SWITCH = "NLPATTN_KEEP_FREED_MEMORY"  # "0" turns the command's start-up call off
TORCH_HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"  # PyTorch's CPU allocator: huge pages for blocks >= 2 MiB
KERNEL_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # "always [madvise] never"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
TRIM_THRESHOLD = 1 << 30  # up to 1 GiB free at the heap's top stays in the process
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: what it adapts up to anyway


def _glibc():
    """glibc as a ctypes library, or None where the C library is another (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p  # glibc only; absent elsewhere
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):
        return None


_kept_in_this_process = False  # set by keep_freed_memory, reported by memory_settings


def keep_freed_memory(trim_threshold: int = TRIM_THRESHOLD, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Make glibc keep up to `trim_threshold` bytes of freed heap; False where that is not possible."""
    global _kept_in_this_process
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
    _kept_in_this_process = _kept_in_this_process or ok
    return ok


def release_free_memory() -> bool:
    """Hand the heap's free memory back to the kernel now (glibc `malloc_trim`); False where not possible.

    Before a fresh peak-RSS reading: memory kept by `keep_freed_memory` would otherwise count
    in the next reading as if the next piece of work had used it."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # returns 1 if it released memory, 0 if none was free: both are success
    return True


def kernel_huge_page_mode(path: Path = KERNEL_THP_MODE) -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"); None where it has none."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return None
    chosen = [word[1:-1] for word in text.split() if word.startswith("[") and word.endswith("]")]
    return chosen[0] if chosen else None


def apply_from_environment(environ: dict | None = None) -> bool:
    """`keep_freed_memory()` unless NLPATTN_KEEP_FREED_MEMORY is 0/false/no/off; whether it applied."""
    value = (os.environ if environ is None else environ).get(ENV_SWITCH, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory()


def memory_settings(environ: dict | None = None) -> dict[str, bool]:
    """What this process runs with (for the run's log and summary.json): freed memory kept by
    `keep_freed_memory`, and PyTorch's huge pages (asked for in the environment, allowed by the kernel)."""
    environ = os.environ if environ is None else environ
    huge = environ.get(TORCH_HUGE_PAGES_ENV, "0").strip() == "1" and kernel_huge_page_mode() in ("madvise", "always")
    return {"keep_freed_memory": _kept_in_this_process, "huge_pages": huge}
