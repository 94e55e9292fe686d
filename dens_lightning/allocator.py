"""Keep freed memory for reuse instead of handing it back to the OS after every tensor, and back the
largest blocks with transparent huge pages.

A force-training step allocates and frees many edge-sized tensors (``[E, F]``: ~17 MB for a batch of
32 aspirins). By default glibc's malloc serves such blocks with fresh ``mmap`` calls, or trims them off
the top of its heap when they are freed, so every step pages them in again. Serving blocks up to
32 MB (glibc's largest mmap threshold) from the heap and never trimming it keeps freed blocks where the
next step reuses them: far fewer page faults and faster training steps (CHANGELOG.md, Performance
history). Larger blocks still come from ``mmap`` and go back when freed: with every block from the
heap (``M_MMAP_MAX=0``) heap fragmentation made the largest evaluations of ``bench.scaling`` run out
of memory. The heap keeps its peak until the process exits. glibc on Linux
only; elsewhere nothing changes. Set ``DENS_LIGHTNING_MALLOC=system`` (or any ``MALLOC_*_`` variable
or ``glibc.malloc`` threshold tunable of your own) to leave malloc alone.

Blocks above 32 MB (systems of about a thousand atoms and more) are still mapped and unmapped on every
call, and paged in 4 KB at a time: a force evaluation of a 1,000-atom PaiNN cell spends more than
half its CPU time in the kernel (BENCHMARKS.md, Summary, Huge pages). glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc 2.35+) asks for transparent huge pages there, 2 MB a page, but it is
read only when a process starts, so the command line (``python -m dens_lightning``,
``dens-lightning``) restarts itself with it (:func:`restart_with_huge_pages`: ``exec``, same process
id and arguments) before anything else.
What it does to force calls by system size and to training steps on large batches is measured in
BENCHMARKS.md, sections scaling and huge-pages: large systems and PaiNN's large batches gain, small
systems and the other batches stay within the machine's noise, and the first call of a process is
slower from 100 to 1,000 atoms (fresh 2 MB pages to fill). In your own scripts (the ASE calculator on
a large system), start Python with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` for the same. Left alone
where you set ``GLIBC_TUNABLES`` yourself, opted out as above, or the kernel's huge pages are off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, <malloc.h>
SETTINGS = (
    (M_MMAP_THRESHOLD, 32 * 1024 * 1024),  # blocks up to 32 MB (glibc's maximum) from the heap
    (M_TRIM_THRESHOLD, 2**31 - 1),  # never hand the top of the heap back
    (M_TOP_PAD, 64 * 1024 * 1024),  # grow the heap 64 MB at a time
)
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
USER_TUNABLES = tuple(  # the same four, as GLIBC_TUNABLES names them
    f"glibc.malloc.{name}" for name in ("mmap_max", "mmap_threshold", "trim_threshold", "top_pad")
)
HUGE_PAGES = "glibc.malloc.hugetlb=1"  # glibc tunable: madvise(MADV_HUGEPAGE) on what malloc maps
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_tuned = False


def _user_chose(environ: Mapping[str, str]) -> bool:
    """Whether the user opted out of our malloc settings or chose their own (environment variables or
    glibc tunables)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return (
        environ.get("DENS_LIGHTNING_MALLOC") == "system"
        or any(v in environ for v in USER_SETTINGS)
        or any(t in tunables for t in USER_TUNABLES)
    )


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for force evaluations (see the module docstring), once per process; returns
    whether it is tuned. Leaves malloc alone where the user chose otherwise."""
    global _tuned
    if not sys.platform.startswith("linux") or _user_chose(os.environ):
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


def glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the running glibc, or None where the C library is another."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def transparent_huge_pages() -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``), None if unknown."""
    try:
        modes = THP_SETTING.read_text().split()
    except OSError:
        return None
    chosen = [mode.strip("[]") for mode in modes if mode.startswith("[")]
    return chosen[0] if chosen else None


def huge_pages_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """``environ`` with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, where restarting in it gives malloc
    huge pages: Linux, glibc 2.35 or later, huge pages not ``never``, and the user chose nothing
    (``GLIBC_TUNABLES``, ``DENS_LIGHTNING_MALLOC=system``, a ``MALLOC_*_`` variable); else None. Also
    None once restarted, since ``GLIBC_TUNABLES`` is then set."""
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in environ or _user_chose(environ):
        return None
    version = glibc_version()
    if version is None or version < (2, 35) or transparent_huge_pages() in (None, "never"):
        return None
    return {**environ, "GLIBC_TUNABLES": HUGE_PAGES}


def restart_with_huge_pages() -> None:
    """Replace this process by the same command line under :func:`huge_pages_environment` (``exec``:
    the process id, arguments and open files stay); returns without a change where that is None or
    the restart fails. Call it first, before the heavy imports, which the restart repeats."""
    environment = huge_pages_environment()
    arguments = getattr(sys, "orig_argv", None)
    if environment is None or not arguments or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, arguments, environment)
    except OSError:  # carry on as we are
        return
