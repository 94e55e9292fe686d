"""Seeded train/validation/test splits and ``splits.json``, the file a run directory keeps them in.

The split is a seeded permutation (or the saved ``splits.json``), so it is identical on every rank
of a run; only rank zero writes ``splits.json`` (atomically, so a rank starting at the same moment
reads all of it or none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import write_text_atomic


def write_splits(path: Path, seed: int, total: int, source, indices: dict[str, np.ndarray]) -> None:
    """``splits.json``: the indices of each split into the ``total`` structures of ``source``; a run
    directory that holds one reuses it instead of drawing its own."""
    payload = {"seed": seed, "total": total, "source": str(source)}
    payload["indices"] = {name: np.asarray(idx).tolist() for name, idx in indices.items()}
    write_text_atomic(path, json.dumps(payload))


def split_sizes(total: int, split: list[float], where: str) -> list[int]:
    """Fractions (summing to at most 1) or whole counts → counts for (train, val, test).

    Fractions that sum to 1 give train the rounding rest, so no structure is left out.
    """
    values = list(split)
    if sum(values) <= 1.0 + 1e-9:
        sizes = [int(round(f * total)) for f in values]
        if sum(values) > 1.0 - 1e-9:
            sizes[0] = total - sum(sizes[1:])
    else:
        if any(v != int(v) for v in values):
            raise InputError(f"data.split: {values} is neither fractions summing to <= 1 nor whole counts")
        sizes = [int(v) for v in values]
    if sum(sizes) > total:
        raise InputError(f"data.split: {values} asks for {sum(sizes)} structures but {where} has {total}")
    if sizes[0] < 1:
        raise InputError(f"data.split: {values} leaves no training structures out of {total} in {where}")
    return sizes


def read_splits(saved: Path, total: int) -> dict[str, np.ndarray]:
    """The indices saved in ``splits.json`` at ``saved``, refused where they were made for another
    number of structures than the data's ``total``."""
    data = json.loads(saved.read_text())
    if data.get("total") != total:
        raise InputError(f"{saved}: made for {data.get('total')} structures, but the data has {total}")
    return {name: np.asarray(idx, dtype=np.int64) for name, idx in data["indices"].items()}


def draw_splits(
    total: int, source, split, seed: int, explicit_val: bool, explicit_test: bool
) -> dict[str, np.ndarray]:
    """Sorted indices of (train, val, test) into ``total`` structures from a permutation seeded with
    ``seed``; ``split`` is ``data.split``. A split given its own file (``explicit_val``,
    ``explicit_test``) is left out here, its fraction going back to train. Empty splits are omitted."""
    fractions = (list(split) + [0.0])[:3]
    fractional = sum(fractions) <= 1.0 + 1e-9
    for k, explicit in ((1, explicit_val), (2, explicit_test)):
        if explicit:  # that split comes from its own file; a fraction goes back to train
            fractions[0] += fractions[k] if fractional else 0.0
            fractions[k] = 0.0
    sizes = split_sizes(total, fractions, source)
    order = np.random.default_rng(seed).permutation(total)
    names = ("train", "val", "test")
    indices, start = {}, 0
    for name, size in zip(names, sizes):
        if size:
            indices[name] = np.sort(order[start : start + size])
        start += size
    return indices
