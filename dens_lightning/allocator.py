"""Keep freed memory for reuse instead of handing it back to the OS after every tensor.

A force evaluation allocates and frees many edge-sized tensors (``[E, F]``: ~17 MB for a batch of 32
aspirins, ~80 MB for a 1,000-atom PaiNN call). glibc's malloc serves large blocks with fresh ``mmap``
calls and returns them with ``munmap`` when freed, so every such tensor is paged in again: about 10^5
page faults per PaiNN training step on CPU. Serving every block from the heap (no ``mmap``) and never
trimming it keeps freed blocks where the next call reuses them: training steps 20-30 % faster, a
1,000-atom PaiNN evaluation 1.8x (BENCHMARKS.md). The process keeps its peak memory until it exits.
glibc on Linux only; elsewhere nothing changes. Set ``DENS_LIGHTNING_MALLOC=system`` (or any
``MALLOC_*_`` variable of your own) to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # mallopt parameters, <malloc.h>
SETTINGS = (
    (M_MMAP_MAX, 0),  # no block from mmap: every one from the heap, reused after it is freed
    (M_TRIM_THRESHOLD, 2**31 - 1),  # never hand the top of the heap back
    (M_TOP_PAD, 64 * 1024 * 1024),  # grow the heap 64 MB at a time
)
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_tuned = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for force evaluations (see the module docstring), once per process; returns
    whether it is tuned. Leaves malloc alone where the user chose otherwise."""
    global _tuned
    chosen = os.environ.get("DENS_LIGHTNING_MALLOC") == "system" or any(
        v in os.environ for v in USER_SETTINGS
    )
    if not sys.platform.startswith("linux") or chosen:
        return False
    if _tuned:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _tuned = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
    return _tuned
