"""A conformation store: a directory of ``.npy`` arrays read memory-mapped, so a pretraining set of
10^5–10^6 conformations is read lazily, structure by structure, and never has to fit in memory.

Layout: ``numbers.npy`` (int8 [N]), ``positions.npy`` (float32 [N, 3], Å), ``ptr.npy`` (int64
[B + 1]), ``molecule.npy`` (int32 [B], index into ``info.json``'s ``smiles``), optional
``energy.npy`` (float64 [B], eV) and ``forces.npy`` (float32 [N, 3], eV/Å), and ``info.json`` (how
the set was made). The directory is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import replacing
from .sampling import Sample
from .structures import Structures

INFO = "info.json"


def write_store(path: str | Path, samples: Iterable[Sample], info: dict | Callable[[], dict]) -> Path:
    """Write ``samples`` to the store directory ``path`` atomically; returns ``path``. ``info`` may be
    a function, called once every sample is drawn (to record, e.g., how many were rejected)."""
    path = Path(path)
    numbers, positions, sizes, molecule, energy, forces = [], [], [], [], [], []
    smiles: dict[str, int] = {}
    for sample in samples:
        numbers.append(np.asarray(sample.numbers, dtype=np.int8))
        positions.append(np.asarray(sample.positions, dtype=np.float32))
        sizes.append(len(sample.numbers))
        molecule.append(smiles.setdefault(sample.smiles, len(smiles)))
        if sample.energy is not None:
            energy.append(sample.energy)
            forces.append(np.asarray(sample.forces, dtype=np.float32))
    if not sizes:
        raise InputError(f"{path}: no conformations to write (every sample was rejected)")
    arrays = {
        "numbers": np.concatenate(numbers),
        "positions": np.concatenate(positions),
        "ptr": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "molecule": np.asarray(molecule, dtype=np.int32),
    }
    if len(energy) == len(sizes):
        arrays["energy"] = np.asarray(energy, dtype=np.float64)
        arrays["forces"] = np.concatenate(forces)
    info = {
        **(info() if callable(info) else info),
        "smiles": list(smiles),
        "structures": len(sizes),
        "atoms": int(arrays["ptr"][-1]),
    }
    with replacing(path) as tmp:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / INFO).write_text(json.dumps(info, indent=1))
    return path


def is_store(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / INFO).exists()


def open_store(path: str | Path) -> Structures:
    """The structures of a store, memory-mapped (labels included when the store has them)."""
    path = Path(path)
    if not is_store(path):
        raise InputError(f"{path}: not a conformation store (no {INFO})")

    def load(name: str) -> np.ndarray | None:
        file = path / f"{name}.npy"
        return np.load(file, mmap_mode="r") if file.exists() else None

    ptr = np.asarray(load("ptr"))
    count = len(ptr) - 1
    return Structures(
        z=load("numbers"),
        pos=load("positions"),
        ptr=ptr,
        cell=np.broadcast_to(np.zeros((1, 3, 3)), (count, 3, 3)),  # no memory: molecules, no cell
        pbc=np.broadcast_to(np.zeros((1, 3), dtype=bool), (count, 3)),
        energy=load("energy"),
        forces=load("forces"),
        source=str(path),
    )


def store_info(path: str | Path) -> dict:
    return json.loads((Path(path) / INFO).read_text())
