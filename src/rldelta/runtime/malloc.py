"""glibc's malloc, set for a process that allocates and frees tensors of hundreds of MB, one matrix after another.

By default glibc hands every block above its mmap threshold (32 MB at most) back to the kernel when it is freed, and
trims the top of the heap. The next matrix's Δ, Gram and their copies then fault in fresh pages, which the kernel
zeroes first: about 1 s of system time for each 4096-wide matrix of a 7B layer (measured on 8 of them: 8.5 s of
system time in 62 s without this, 1.7 s in 55 s with it). Keeping freed blocks in the heap reuses those pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap, and the heap is never trimmed: the process holds its high-water mark.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Keep freed blocks in this process's heap for reuse; whether it applied (glibc on Linux only).

    For processes that rldelta owns (the diff's workers): the memory goes back to the system when they exit."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
