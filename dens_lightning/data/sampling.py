"""Non-equilibrium conformations from SMILES with RDKit, and their labels.

Conformers come from ETKDG and are relaxed with MMFF94; each is then perturbed by Gaussian
Cartesian displacements (a thermal-like spread around the minimum). Labels (energy in eV, forces
in eV/Å) come from GFN2-xTB through tblite when installed, otherwise from MMFF94 through RDKit.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from ase import units as ase_units

from ..errors import InputError

KCAL_PER_MOL = ase_units.kcal / ase_units.mol  # eV


def molecule_from_smiles(smiles: str):
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(f"SMILES {smiles!r}: RDKit cannot parse it")
    return Chem.AddHs(mol)


def conformers(smiles: str, count: int, seed: int) -> tuple[object, np.ndarray, list[np.ndarray]]:
    """``count`` MMFF-relaxed ETKDG conformers: (RDKit molecule, atomic numbers, positions in Å)."""
    from rdkit.Chem import AllChem

    mol = molecule_from_smiles(smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(count), params=params))
    if not ids:
        raise InputError(f"SMILES {smiles!r}: RDKit could not embed a 3D conformer")
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    numbers = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    return mol, numbers, [mol.GetConformer(i).GetPositions() for i in ids]


def perturb(positions: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return positions + rng.normal(0.0, std, size=positions.shape)


def resolve_labeller(name: str) -> str:
    """``auto`` → ``xtb`` when tblite is installed, else ``mmff``."""
    has_xtb = importlib.util.find_spec("tblite") is not None
    if name == "auto":
        return "xtb" if has_xtb else "mmff"
    if name == "xtb" and not has_xtb:
        raise InputError("labeller 'xtb' needs tblite: pip install 'dens_lightning[xtb]'")
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
    from rdkit.Chem import AllChem

    props = AllChem.MMFFGetMoleculeProperties(mol)
    field = AllChem.MMFFGetMoleculeForceField(mol, props)
    flat = positions.reshape(-1).tolist()
    energy = field.CalcEnergy(flat) * KCAL_PER_MOL
    forces = -np.asarray(field.CalcGrad(flat)).reshape(-1, 3) * KCAL_PER_MOL
    return energy, forces
