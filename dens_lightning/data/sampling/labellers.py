"""Labels of a conformation: energy (eV) and forces (eV/Å) from GFN2-xTB through tblite, or MMFF94
through RDKit."""

from __future__ import annotations

import importlib.util

import numpy as np
from ase import units as ase_units

from ...errors import InputError
from .mmff import KCAL_PER_MOL, mmff_energy_gradient, mmff_field

LABELLERS = ("auto", "xtb", "mmff", "none")


def resolve_labeller(name: str) -> str:
    """``auto`` → ``xtb`` when tblite is installed, else ``mmff``."""
    has_xtb = importlib.util.find_spec("tblite") is not None
    if name == "auto":
        return "xtb" if has_xtb else "mmff"
    if name == "xtb" and not has_xtb:
        raise InputError("labeller 'xtb' needs tblite: pip install 'dens_lightning[xtb]'")
    if name not in LABELLERS:
        raise InputError(f"labeller {name!r}: expected one of {', '.join(LABELLERS)}")
    return name


def label_xtb(numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray] | None:
    """GFN2-xTB energy (eV) and forces (eV/Å); None when the SCF does not converge."""
    from tblite.interface import Calculator

    try:
        calc = Calculator("GFN2-xTB", numbers, positions / ase_units.Bohr)
        calc.set("verbosity", 0)
        result = calc.singlepoint()
    except RuntimeError:
        return None
    energy = float(result.get("energy")) * ase_units.Hartree
    forces = -np.asarray(result.get("gradient")) * ase_units.Hartree / ase_units.Bohr
    return energy, forces


def label_mmff(mol, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """MMFF94 energy (eV) and forces (eV/Å)."""
    energy, gradient = mmff_energy_gradient(mmff_field(mol), positions)
    return energy * KCAL_PER_MOL, -gradient * KCAL_PER_MOL
