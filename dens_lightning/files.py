"""Writing files safely when several processes (DDP ranks, nodes) may reach the same path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock


def json_text(value: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """``value`` as strict JSON: NaN and infinite floats (a diverged model's errors) become ``null``,
    which every JSON reader accepts, where Python's default ``NaN`` is not JSON."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(v) for v in item]
        return item

    return json.dumps(finite(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | Path, record: Any) -> Path:
    """``record`` as indented JSON, written atomically."""
    return write_text_atomic(path, json_text(record, indent=2) + "\n")


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold ``path.lock`` while making ``path``: the first process makes it, the others wait and
    then find it made (e.g. every rank of a job asking for the same cached data set)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        yield
