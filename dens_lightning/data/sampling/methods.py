"""The sampling methods (normal-mode, md, perturb) and the bond graph that decides which samples are
kept."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from ase import units as ase_units
from ase.data import covalent_radii

from .mmff import BOLTZMANN_KCAL, MMFFCalculator

METHODS = ("normal-mode", "md", "perturb")
BOND_SCALE = 1.25  # bonded: closer than this times the sum of covalent radii
MIN_FORCE_CONSTANT = 1.0  # kcal/mol/Å², floor on soft (torsional) modes so displacements stay finite


def perturb(positions: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return positions + rng.normal(0.0, std, size=positions.shape)


def normal_mode_sample(
    minimum: np.ndarray,
    constants: np.ndarray,
    modes: np.ndarray,
    temperature: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One ANI-1-style normal-mode sample around ``minimum`` at ``temperature`` (K)."""
    c = rng.uniform(0.0, 1.0, size=len(constants))
    c *= rng.uniform(0.0, 1.0) / c.sum()
    force_constants = np.maximum(np.abs(constants), MIN_FORCE_CONSTANT)
    amplitude = np.sqrt(3.0 * c * len(minimum) * BOLTZMANN_KCAL * temperature / force_constants)
    signs = rng.choice([-1.0, 1.0], size=len(constants))
    return minimum + np.einsum("k,kij->ij", signs * amplitude, modes)


def md_samples(
    mol, minimum: np.ndarray, count: int, temperature: float, rng: np.random.Generator, interval: int = 20
) -> Iterator[np.ndarray]:
    """Snapshots of MMFF94 Langevin dynamics (0.5 fs steps, friction 0.01/fs) started at the minimum
    with Maxwell–Boltzmann velocities, after ``10 * interval`` steps of equilibration."""
    from ase import Atoms
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    atoms = Atoms(numbers=numbers, positions=minimum)
    atoms.set_constraint(FixCom())
    atoms.calc = MMFFCalculator(mol)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(
        atoms,
        timestep=0.5 * ase_units.fs,
        temperature_K=temperature,
        friction=0.01 / ase_units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(10 * interval)
    for _ in range(count):
        dynamics.run(interval)
        yield atoms.get_positions()


def bond_graph(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Boolean [N, N] adjacency: pairs closer than ``BOND_SCALE`` times their covalent radii sum."""
    radii = covalent_radii[numbers]
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = distances < BOND_SCALE * (radii[:, None] + radii[None])
    np.fill_diagonal(bonded, False)
    return bonded
