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

from ..errors import InputError, first_line
from ..files import replacing
from .sampling import Sample
from .structures import Structures

INFO = "info.json"
REQUIRED = ("numbers", "positions", "ptr")


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
    """The structures of a store, memory-mapped (labels included when the store has them). The
    arrays' shapes are checked against each other (cheap: headers and ``ptr`` only); their values
    were checked when the conformations were sampled."""
    path = Path(path)
    if not is_store(path):
        raise InputError(f"{path}: not a conformation store (no {INFO})")

    def load(name: str, required: bool = True) -> np.ndarray | None:
        file = path / f"{name}.npy"
        if not file.exists():
            if required:
                raise InputError(f"{file}: missing; a conformation store needs {', '.join(REQUIRED)}.npy")
            return None
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except Exception as err:  # truncated or not an .npy file
            raise InputError(
                f"{file}: cannot read as .npy ({type(err).__name__}: {first_line(err)})"
            ) from err

    try:
        store_info(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path / INFO}: not valid JSON ({type(err).__name__})") from err
    numbers, positions, ptr = load("numbers"), load("positions"), np.asarray(load("ptr"))
    energy, forces = load("energy", required=False), load("forces", required=False)

    def refuse(name: str, expected: str) -> None:
        raise InputError(f"{path / name}: does not fit the store; expected {expected}")

    if numbers.ndim != 1 or numbers.dtype.kind not in "iu":
        refuse("numbers.npy", "integers [N]")
    atoms = len(numbers)
    if atoms and numbers.min() < 1:
        refuse("numbers.npy", "atomic numbers >= 1")
    if ptr.ndim != 1 or len(ptr) < 2 or ptr.dtype.kind not in "iu":
        refuse("ptr.npy", "integers [B + 1]")
    if ptr[0] != 0 or ptr[-1] != atoms or not np.all(np.diff(ptr) > 0):
        refuse("ptr.npy", f"rising from 0 to {atoms}, the number of atoms")
    if positions.shape != (atoms, 3) or positions.dtype.kind != "f":
        refuse("positions.npy", f"floats [{atoms}, 3]")
    if (energy is None) != (forces is None):
        refuse("forces.npy" if forces is None else "energy.npy", "energy.npy and forces.npy together")
    if energy is not None and (energy.shape != (len(ptr) - 1,) or energy.dtype.kind != "f"):
        refuse("energy.npy", f"floats [{len(ptr) - 1}]")
    if forces is not None and (forces.shape != (atoms, 3) or forces.dtype.kind != "f"):
        refuse("forces.npy", f"floats [{atoms}, 3]")
    count = len(ptr) - 1
    return Structures(
        z=numbers,
        pos=positions,
        ptr=ptr,
        cell=np.broadcast_to(np.zeros((1, 3, 3)), (count, 3, 3)),  # no memory: molecules, no cell
        pbc=np.broadcast_to(np.zeros((1, 3), dtype=bool), (count, 3)),
        energy=energy,
        forces=forces,
        source=str(path),
    )


def store_info(path: str | Path) -> dict:
    return json.loads((Path(path) / INFO).read_text())


def structure_smiles(path: str | Path) -> list[str]:
    """The SMILES of each structure of a store (``molecule.npy`` indexes ``info.json``'s list)."""
    path = Path(path)
    names = store_info(path)["smiles"]
    return [names[int(k)] for k in np.load(path / "molecule.npy", allow_pickle=False)]
