"""Writing files safely when several processes (DDP ranks, nodes) may reach the same path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` under a temporary name, then rename: a reader sees the old file or the whole
    new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold ``path.lock`` while making ``path``: the first process makes it, the others wait and
    then find it made (e.g. every rank of a job asking for the same cached data set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield
