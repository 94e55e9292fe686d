"""Keep freed memory for reuse instead of handing it back to the OS after every tensor.

A force-training step allocates and frees many edge-sized tensors (``[E, F]``: ~17 MB for a batch of
32 aspirins). By default glibc's malloc serves such blocks with fresh ``mmap`` calls, or trims them off
the top of its heap when they are freed, so every step pages them in again: about 10^5 page faults per
PaiNN training step on the CPU. Serving blocks up to 32 MB (glibc's largest mmap threshold) from the
heap and never trimming it keeps freed blocks where the next step reuses them: page faults of an
18-step PaiNN run down 3-5x, steps 51-63 -> 77-78 structures/s in single runs (BENCHMARKS.md). Larger blocks
still come from ``mmap`` and go back when freed: with every block from the heap (``M_MMAP_MAX=0``,
tried) a 5,000-atom equiformer evaluation grew past 24 GB and was killed, where this setting peaks at
19 GB. The heap keeps its peak until the process exits. glibc on Linux
only; elsewhere nothing changes. Set ``DENS_LIGHTNING_MALLOC=system`` (or any ``MALLOC_*_`` variable
of your own) to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, <malloc.h>
SETTINGS = (
    (M_MMAP_THRESHOLD, 32 * 1024 * 1024),  # blocks up to 32 MB (glibc's maximum) from the heap
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
