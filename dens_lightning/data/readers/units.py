"""Energy and length units: the ones ``data.units`` names, and the conversion to eV and Å."""

from __future__ import annotations

from ase import units as ase_units

from ...errors import InputError
from ..structures import Structures

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


def convert(s: Structures, energy_unit: str, length_unit: str) -> Structures:
    e, length = ENERGY_UNITS[energy_unit], LENGTH_UNITS[length_unit]
    s.pos = s.pos * length
    s.cell = s.cell * length
    if s.energy is not None:
        s.energy = s.energy * e
    if s.forces is not None:
        s.forces = s.forces * (e / length)
    s.units = {"energy": energy_unit, "length": length_unit}
    return s
