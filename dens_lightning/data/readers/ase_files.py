"""Files ASE reads: ``.xyz``/``.extxyz``, ``.db``, ``.traj``; energies and forces from the calculator
results or the ``info``/``arrays`` keys, fixed atoms from ``FixAtoms`` constraints."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError, first_line
from ..structures import Structures

if TYPE_CHECKING:
    from .dispatch import ReadOptions


def read_ase(path: Path, options: ReadOptions) -> Structures:
    import ase.io

    frames = []
    try:
        for atoms in ase.io.iread(path, index=":"):
            frames.append(atoms)
    except Exception as err:  # the parser stops at a malformed or truncated frame
        raise InputError(
            f"{path}: frame {len(frames)}: cannot read ({type(err).__name__}: {first_line(err)}); "
            f"the file may be truncated or not {path.suffix} ({len(frames)} frames read before it)"
        ) from err
    if not frames:
        raise InputError(f"{path}: no structures found")
    energies, forces = [], []
    for k, atoms in enumerate(frames):
        energies.append(_ase_energy(atoms, options.energy_key, path, k))
        forces.append(_ase_forces(atoms, options.forces_key, path, k))
    has_energy = all(e is not None for e in energies)
    has_forces = all(f is not None for f in forces)
    return Structures.from_frames(
        numbers=[a.numbers for a in frames],
        positions=[a.positions for a in frames],
        energies=energies if has_energy else None,
        forces=forces if has_forces else None,
        cells=[a.cell.array for a in frames],
        pbcs=[a.pbc for a in frames],
        fixed=[_fixed_mask(a) for a in frames],
        source=str(path),
    )


def _calc_result(atoms, name: str):
    calc = atoms.calc
    if calc is not None and name in getattr(calc, "results", {}):
        return calc.results[name]
    return None


def _ase_energy(atoms, key: str | None, path: Path, frame: int) -> float | None:
    if key is not None:
        value = atoms.info.get(key, _calc_result(atoms, key))
        if value is None:
            raise InputError(f"{path}: frame {frame}: energy key {key!r} not found (data.energy_key)")
        return float(value)
    for name in ("energy", "free_energy"):
        value = _calc_result(atoms, name)
        if value is not None:
            return float(value)
    for name in ("energy", "Energy", "REF_energy", "total_energy"):
        if name in atoms.info:
            return float(atoms.info[name])
    return None


def _ase_forces(atoms, key: str | None, path: Path, frame: int) -> np.ndarray | None:
    names = [key] if key is not None else ["forces", "REF_forces", "force"]
    for name in names:
        value = atoms.arrays.get(name, _calc_result(atoms, name))
        if value is not None:
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (len(atoms), 3):
                raise InputError(
                    f"{path}: frame {frame}: forces {name!r} have shape {value.shape}, "
                    f"expected ({len(atoms)}, 3)"
                )
            return value
    if key is not None:
        raise InputError(f"{path}: frame {frame}: forces key {key!r} not found (data.forces_key)")
    return None


def _fixed_mask(atoms) -> np.ndarray:
    from ase.constraints import FixAtoms

    mask = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.index] = True
    return mask
