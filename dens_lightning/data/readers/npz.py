"""``.npz`` files: the sGDML, rMD17 and ase-like layouts recognised, any other through key mapping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError
from ..structures import Structures

if TYPE_CHECKING:
    from .dispatch import ReadOptions

# npz layouts recognised without help: (numbers, positions, energy, forces) and their energy unit
NPZ_LAYOUTS = {
    "sGDML": (("z", "R", "E", "F"), "kcal/mol"),
    "rMD17": (("nuclear_charges", "coords", "energies", "forces"), "kcal/mol"),
    "ase-like": (("numbers", "positions", "energy", "forces"), "eV"),
}


def read_npz(path: Path, options: ReadOptions) -> tuple[Structures, tuple[str, str]]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    layout_units = "eV"
    names = None
    for (numbers, positions, energy, forces), unit in NPZ_LAYOUTS.values():
        if numbers in arrays:
            names = {"numbers": numbers, "positions": positions, "energy": energy, "forces": forces}
            layout_units = unit
            break
    names = dict(names or {})
    names.update({k: v for k, v in options.keys.items() if v})
    if options.energy_key:
        names["energy"] = options.energy_key
    if options.forces_key:
        names["forces"] = options.forces_key
    for role in ("numbers", "positions"):
        if names.get(role) not in arrays:
            raise InputError(
                f"{path}: no {role} array (keys: {', '.join(sorted(arrays))}); "
                f"name it with data.keys.{role}=KEY"
            )
    for role, key in (("energy", options.energy_key), ("forces", options.forces_key)):
        if key and key not in arrays:
            raise InputError(f"{path}: {role} key {key!r} not found (keys: {', '.join(sorted(arrays))})")
    positions = np.asarray(arrays[names["positions"]], dtype=np.float64)
    numbers = np.asarray(arrays[names["numbers"]]).astype(np.int64)
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise InputError(
            f"{path}: positions {names['positions']!r} have shape {positions.shape}, "
            "expected (frames, atoms, 3)"
        )
    n_frames, n_atoms = positions.shape[:2]
    if numbers.ndim == 2:  # one row per frame: must all be equal
        if not (numbers == numbers[:1]).all():
            raise InputError(f"{path}: atomic numbers differ between frames; expected one row for all")
        numbers = numbers[0]
    if numbers.shape != (n_atoms,):
        raise InputError(f"{path}: atomic numbers have shape {numbers.shape}, expected ({n_atoms},)")
    energy = arrays.get(names.get("energy"))
    if energy is not None:
        energy = np.asarray(energy, dtype=np.float64).reshape(-1)
        if energy.shape != (n_frames,):
            raise InputError(f"{path}: energies have {energy.size} values for {n_frames} frames")
    forces = arrays.get(names.get("forces"))
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != positions.shape:
            raise InputError(f"{path}: forces have shape {forces.shape}, expected {positions.shape}")
    structures = Structures(
        z=np.tile(numbers, n_frames),
        pos=positions.reshape(-1, 3),
        ptr=np.arange(n_frames + 1, dtype=np.int64) * n_atoms,
        cell=np.zeros((n_frames, 3, 3)),
        pbc=np.zeros((n_frames, 3), dtype=bool),
        energy=energy,
        forces=forces.reshape(-1, 3) if forces is not None else None,
        source=str(path),
    )
    return structures, (layout_units, "Å")
