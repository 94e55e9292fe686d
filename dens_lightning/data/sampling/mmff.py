"""MMFF94 through RDKit: energies, gradients, the Hessian, internal normal modes and an ASE
calculator."""

from __future__ import annotations

import numpy as np
from ase import units as ase_units
from ase.calculators.calculator import Calculator, all_changes

KCAL_PER_MOL = ase_units.kcal / ase_units.mol  # eV
BOLTZMANN_KCAL = ase_units.kB / KCAL_PER_MOL  # kcal/mol/K


def mmff_field(mol):
    from rdkit.Chem import AllChem

    return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))


def mmff_energy_gradient(field, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """MMFF94 energy (kcal/mol) and gradient (kcal/mol/Å) at ``positions`` (Å).

    The energy is evaluated first on purpose: RDKit's ``CalcGrad(pos)`` alone can return the
    gradient of a stale state (measured: a Hessian element 4x too small)."""
    flat = np.asarray(positions, dtype=np.float64).reshape(-1).tolist()
    return field.CalcEnergy(flat), np.asarray(field.CalcGrad(flat)).reshape(-1, 3)


def mmff_hessian(field, positions: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """[3N, 3N] Hessian (kcal/mol/Å²) by central differences of the analytic gradient."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1)
    hessian = np.empty((x.size, x.size))
    for k in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus[k] += step
        minus[k] -= step
        difference = mmff_energy_gradient(field, plus)[1] - mmff_energy_gradient(field, minus)[1]
        hessian[k] = difference.reshape(-1) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def internal_basis(positions: np.ndarray) -> np.ndarray:
    """Orthonormal basis [3N, 3N - 6] (or - 5, linear) of the displacements that are not rigid
    translations or rotations."""
    n = len(positions)
    centred = positions - positions.mean(axis=0)
    rigid = []
    for axis in np.eye(3):
        rigid.append(np.tile(axis, n))
        rigid.append(np.cross(axis, centred).reshape(-1))
    q, r = np.linalg.qr(np.array(rigid).T)
    rank = int((np.abs(np.diag(r)) > 1e-8 * max(1.0, np.abs(r).max())).sum())
    full, _ = np.linalg.qr(np.concatenate([q[:, :rank], np.eye(3 * n)], axis=1))
    return full[:, rank : 3 * n]


def normal_modes(field, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Force constants [M] (kcal/mol/Å²) and unit Cartesian normal modes [M, N, 3] of the internal
    motions at a minimum (classical configurational sampling needs no mass weighting)."""
    basis = internal_basis(positions)
    constants, vectors = np.linalg.eigh(basis.T @ mmff_hessian(field, positions) @ basis)
    modes = (basis @ vectors).T.reshape(-1, len(positions), 3)
    return constants, modes


class MMFFCalculator(Calculator):
    """A minimal ASE calculator for MMFF94 through RDKit (energy eV, forces eV/Å)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, mol):
        super().__init__()
        self.field = mmff_field(mol)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, gradient = mmff_energy_gradient(self.field, self.atoms.positions)
        self.results = {"energy": energy * KCAL_PER_MOL, "forces": -gradient * KCAL_PER_MOL}
