"""Read structure files into :class:`Structures`, converting to eV and Å.

Formats by extension: ``.xyz``/``.extxyz``, ``.db``, ``.traj`` (through ASE); ``.npz`` (sGDML
``R z E F`` and rMD17 ``nuclear_charges coords energies forces`` layouts are recognised, any other
through key mapping); ``.h5``/``.hdf5`` (ANI-1x and SPICE layouts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units as ase_units

from ..errors import InputError, first_line
from .checks import warn_energy_unit
from .structures import Structures

ASE_SUFFIXES = (".xyz", ".extxyz", ".db", ".traj")
NPZ_SUFFIXES = (".npz",)
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = ASE_SUFFIXES + NPZ_SUFFIXES + HDF5_SUFFIXES

ENERGY_UNITS = {  # in eV
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kJ/mol": ase_units.kJ / ase_units.mol,
    "Hartree": ase_units.Hartree,
    "Ha": ase_units.Hartree,
    "Ry": ase_units.Rydberg,
}
LENGTH_UNITS = {"Å": 1.0, "A": 1.0, "Angstrom": 1.0, "Bohr": ase_units.Bohr, "nm": 10.0}

# npz layouts recognised without help: (numbers, positions, energy, forces) and their energy unit
NPZ_LAYOUTS = {
    "sGDML": (("z", "R", "E", "F"), "kcal/mol"),
    "rMD17": (("nuclear_charges", "coords", "energies", "forces"), "kcal/mol"),
    "ase-like": (("numbers", "positions", "energy", "forces"), "eV"),
}


@dataclass
class ReadOptions:
    """How to read a file whose layout is not self-describing (the ``data.*`` config keys)."""

    units: str = "auto"  # "auto", or "ENERGY" or "ENERGY, LENGTH", e.g. "kcal/mol" or "Hartree, Bohr"
    energy_key: str | None = None
    forces_key: str | None = None
    keys: dict = field(default_factory=dict)  # npz/h5: {"numbers": ..., "positions": ...}


def parse_units(spec: str, where: str = "data.units") -> tuple[str, str]:
    """``"kcal/mol"`` → (kcal/mol, Å); ``"Hartree, Bohr"`` → (Hartree, Bohr). Forces are ENERGY/LENGTH."""
    parts = [p.strip() for p in spec.split(",")]
    energy, length = parts[0], parts[1] if len(parts) > 1 else "Å"
    if len(parts) > 2 or energy not in ENERGY_UNITS or length not in LENGTH_UNITS:
        raise InputError(
            f"{where}: {spec!r} is not a unit; expected an energy unit ({', '.join(ENERGY_UNITS)}) "
            f"optionally followed by ', ' and a length unit ({', '.join(LENGTH_UNITS)})"
        )
    return energy, length


def read_structures(path: str | Path, options: ReadOptions | None = None) -> Structures:
    """Read every frame of ``path`` into eV and Å; raise :class:`InputError` on bad input."""
    options = options or ReadOptions()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        from .store import is_store, open_store

        if is_store(path):  # memory-mapped, read structure by structure
            return open_store(path)
        raise InputError(
            f"{path}: is a directory but not a conformation store (no info.json); expected a structure "
            f"file ({', '.join(SUFFIXES)}) or a store written by `sample --out DIR`"
        )
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unknown extension {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        if suffix in NPZ_SUFFIXES:
            raw, default_units = _read_npz(path, options)
        elif suffix in HDF5_SUFFIXES:
            raw, default_units = _read_hdf5(path, options)
        else:
            raw, default_units = _read_ase(path, options), ("eV", "Å")
    except InputError:
        raise
    except Exception as err:  # a parser failing on a malformed file
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise InputError(f"{path}: cannot read as {suffix} ({reason})") from err
    energy_unit, length_unit = (
        default_units if options.units == "auto" else parse_units(options.units, f"{path}: data.units")
    )
    structures = _convert(raw, energy_unit, length_unit).validate()
    warn_energy_unit(structures, energy_unit, ENERGY_UNITS)
    return structures


def _convert(s: Structures, energy_unit: str, length_unit: str) -> Structures:
    e, length = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    s.pos = s.pos * length
    s.cell = s.cell * length
    if s.energy is not None:
        s.energy = s.energy * e
    if s.forces is not None:
        s.forces = s.forces * (e / length)
    s.units = {"energy": energy_unit, "length": length_unit}
    return s


# ---------------------------------------------------------------- ASE formats


def _read_ase(path: Path, options: ReadOptions) -> Structures:
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


# ---------------------------------------------------------------- npz


def _read_npz(path: Path, options: ReadOptions) -> tuple[Structures, tuple[str, str]]:
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


# ---------------------------------------------------------------- HDF5 (ANI-1x, SPICE)

HDF5_ENERGY_KEYS = ("wb97x_dz.energy", "energies", "energy", "dft_total_energy")
HDF5_FORCE_KEYS = ("wb97x_dz.forces", "forces", "dft_total_gradient")


def _read_hdf5(path: Path, options: ReadOptions) -> tuple[Structures, tuple[str, str]]:
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
    from .structures import concatenate

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
