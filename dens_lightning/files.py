"""Writing files safely when several processes (DDP ranks, nodes) may reach the same path."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write a file or directory to; renamed to ``path`` when the
    block ends, so a reader sees the old one or the whole new one, never a part. An error in the block
    removes the temporary instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold ``path.lock`` while making ``path``: the first process makes it, the others wait and
    then find it made (e.g. every rank of a job asking for the same cached data set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield
