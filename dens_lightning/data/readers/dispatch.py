"""Format detection and dispatch: which reader a file's extension (or a store directory) calls, and
the options (:class:`ReadOptions`) for files whose layout is not self-describing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError, first_line
from ..checks import warn_energy_unit
from ..structures import Structures
from .ase_files import read_ase
from .hdf5 import read_hdf5
from .npz import read_npz
from .units import ENERGY_UNITS, convert, parse_units

ASE_SUFFIXES = (".xyz", ".extxyz", ".db", ".traj")
NPZ_SUFFIXES = (".npz",)
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = ASE_SUFFIXES + NPZ_SUFFIXES + HDF5_SUFFIXES


@dataclass
class ReadOptions:
    """How to read a file whose layout is not self-describing (the ``data.*`` config keys)."""

    units: str = "auto"  # "auto", or "ENERGY" or "ENERGY, LENGTH", e.g. "kcal/mol" or "Hartree, Bohr"
    energy_key: str | None = None
    forces_key: str | None = None
    keys: dict = field(default_factory=dict)  # npz/h5: {"numbers": ..., "positions": ...}


def read_structures(path: str | Path, options: ReadOptions | None = None) -> Structures:
    """Read every frame of ``path`` into eV and Å; raise :class:`InputError` on bad input."""
    options = options or ReadOptions()
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        from ..store import is_store, open_store

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
            raw, default_units = read_npz(path, options)
        elif suffix in HDF5_SUFFIXES:
            raw, default_units = read_hdf5(path, options)
        else:
            raw, default_units = read_ase(path, options), ("eV", "Å")
    except InputError:
        raise
    except Exception as err:  # a parser failing on a malformed file
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise InputError(f"{path}: cannot read as {suffix} ({reason})") from err
    energy_unit, length_unit = (
        default_units if options.units == "auto" else parse_units(options.units, f"{path}: data.units")
    )
    structures = convert(raw, energy_unit, length_unit).validate()
    warn_energy_unit(structures, energy_unit, ENERGY_UNITS)
    return structures
