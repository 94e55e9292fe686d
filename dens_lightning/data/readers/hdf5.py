"""``.h5``/``.hdf5`` files: the ANI-1x and SPICE layouts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError
from ..structures import Structures

if TYPE_CHECKING:
    from .dispatch import ReadOptions

HDF5_ENERGY_KEYS = ("wb97x_dz.energy", "energies", "energy", "dft_total_energy")
HDF5_FORCE_KEYS = ("wb97x_dz.forces", "forces", "dft_total_gradient")


def read_hdf5(path: Path, options: ReadOptions) -> tuple[Structures, tuple[str, str]]:
    """ANI-1x layout: one group per formula with ``atomic_numbers`` [n], ``coordinates`` [k, n, 3] (Å),
    energies and forces in Hartree and Hartree/Å. SPICE layout: ``conformations`` in Bohr and
    ``dft_total_gradient`` (the negative force) in Hartree/Bohr."""
    import h5py

    numbers_key = options.keys.get("numbers") or "atomic_numbers"
    parts, spice = [], False
    with h5py.File(path, "r") as handle:
        groups = []
        handle.visititems(lambda name, obj: groups.append(obj) if isinstance(obj, h5py.Group) else None)
        if not groups:
            groups = [handle]
        for group in groups:
            if numbers_key not in group:
                continue
            pos_key = options.keys.get("positions") or (
                "coordinates" if "coordinates" in group else "conformations"
            )
            if pos_key not in group:
                continue
            spice = spice or pos_key == "conformations"
            positions = np.asarray(group[pos_key], dtype=np.float64)
            numbers = np.asarray(group[numbers_key]).astype(np.int64)
            energy = _first_dataset(group, options.energy_key, HDF5_ENERGY_KEYS, path, "energy")
            forces = _first_dataset(group, options.forces_key, HDF5_FORCE_KEYS, path, "forces")
            if forces is not None and forces[0].endswith("gradient"):
                forces = (forces[0], -forces[1])
            n_frames = positions.shape[0]
            parts.append(
                Structures.from_frames(
                    numbers=[numbers] * n_frames,
                    positions=list(positions),
                    energies=list(energy[1].reshape(-1)) if energy is not None else None,
                    forces=list(forces[1]) if forces is not None else None,
                    source=str(path),
                )
            )
    if not parts:
        raise InputError(
            f"{path}: no group with {numbers_key!r} and coordinates (ANI-1x or SPICE layout expected)"
        )
    from ..structures import concatenate

    merged = concatenate(parts)
    merged.source = str(path)
    return merged, ("Hartree", "Bohr") if spice else ("Hartree", "Å")


def _first_dataset(group, key, candidates, path, role):
    if key is not None:
        if key not in group:
            raise InputError(f"{path}: group {group.name}: {role} key {key!r} not found")
        return key, np.asarray(group[key], dtype=np.float64)
    for name in candidates:
        if name in group:
            return name, np.asarray(group[name], dtype=np.float64)
    return None
