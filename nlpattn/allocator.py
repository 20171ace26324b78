"""The process's C allocator: keep freed large blocks for reuse instead of handing them back.

glibc serves every allocation above a threshold (32 MiB at most, by default) with a fresh
`mmap` and returns it to the kernel on free. A tensor that size — a (batch·seq, vocab) logits
matrix, say — is then page-faulted in, page by page, on every step: measured on a 2-core Xeon,
bf16 `F.linear` to 2048 × 8192 logits took 12.2 ms, of which ~7.5 ms were page faults, and
4.6 ms once the block was reused. Raising glibc's mmap and trim thresholds (`mallopt`) keeps
such blocks in the heap. It is what tcmalloc or jemalloc via LD_PRELOAD give, without a
preload. The cost: the process does not hand freed memory back until it exits (peak RSS is
unchanged; RSS after a peak stays near it).

The `nlpattn` command applies it at start-up; `NLPATTN_KEEP_FREED_MEMORY=0` turns it off.
Library users call `keep_freed_memory()` themselves; importing nlpattn changes nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV_SWITCH = "NLPATTN_KEEP_FREED_MEMORY"  # "0" turns the command's start-up call off
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
DEFAULT_LIMIT = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed


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


def keep_freed_memory(limit: int = DEFAULT_LIMIT) -> bool:
    """Make glibc keep freed blocks up to `limit` bytes for reuse; False where that is not possible."""
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; the mmap threshold is the one that matters, the trim threshold
    # stops the heap's top from being handed back between steps.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(limit))) and bool(libc.mallopt(M_TRIM_THRESHOLD, int(limit)))


def apply_from_environment(environ: dict | None = None) -> bool:
    """`keep_freed_memory()` unless NLPATTN_KEEP_FREED_MEMORY is 0/false/no/off; whether it applied."""
    value = (os.environ if environ is None else environ).get(ENV_SWITCH, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory()
