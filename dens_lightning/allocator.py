"""Keep freed memory for reuse instead of handing it back to the OS after every tensor.

A force-training step allocates and frees many edge-sized tensors (``[E, F]``: ~17 MB for a batch of
32 aspirins). glibc's malloc serves blocks above its mmap threshold with fresh ``mmap`` calls and
returns them with ``munmap`` when freed, so every such tensor is paged in again: about 10^5 page faults
per PaiNN step on CPU, 15-20 % of the step (BENCHMARKS.md, "allocator"). Raising the mmap and trim
thresholds keeps freed blocks in the heap, where the next step reuses them. Peak memory is unchanged;
the process keeps its peak until it exits. glibc on Linux only; elsewhere nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1  # never trim the top of the heap
TOP_PAD = 64 * 1024 * 1024  # grow the heap in 64 MB steps
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for training (see the module docstring); returns whether it was tuned.
    Leaves malloc alone where the user set any ``MALLOC_*_`` variable of their own."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
