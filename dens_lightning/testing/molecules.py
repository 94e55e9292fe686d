"""Random molecules, periodic cells and their graphs for tests, and the ``molecules`` and ``batch_of``
pytest fixtures (import them into a ``conftest.py`` to use them outside
:class:`~dens_lightning.testing.BackboneConformance`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch import Tensor

from ..data.graph import Graph, collate


def random_molecule(
    n_atoms: int, rng: np.random.Generator, min_distance: float = 0.9, box: float | None = None
):
    """Atomic numbers and positions (Å) of a random compact molecule with no pair closer than min_distance."""
    box = box or 1.3 * n_atoms ** (1 / 3) + 1.0
    positions = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, box, 3)
        if all(np.linalg.norm(trial - p) >= min_distance for p in positions):
            positions.append(trial)
    z = rng.choice([1, 6, 7, 8], size=n_atoms)
    return z, np.array(positions)


def molecule_graph(z, pos, dtype=torch.float64, energy=None, forces=None) -> Graph:
    """The graph of one molecule (no cell, no periodic boundaries), without a neighbour list."""
    n = len(z)
    return Graph(
        z=torch.as_tensor(z, dtype=torch.long),
        pos=torch.as_tensor(pos, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.long),
        ptr=torch.tensor([0, n]),
        cell=torch.zeros(1, 3, 3, dtype=dtype),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        energy=None if energy is None else torch.tensor([energy], dtype=torch.float64),
        forces=None if forces is None else torch.as_tensor(forces, dtype=dtype),
    )


def dimer_graph(z1: int, z2: int, distance: float, cutoff: float = 4.0) -> Graph:
    """Two atoms ``distance`` Å apart on the x axis, float64, with their neighbour list."""
    from ..data.neighbors import with_neighbors

    pos = np.array([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]])
    return with_neighbors(molecule_graph(np.array([z1, z2]), pos, dtype=torch.float64), cutoff)


def dimer_energy(energy: Callable[[Graph], Tensor], z1: int, z2: int, distance: float) -> float:
    """``energy`` (a module mapping a batch to per-structure energies, eV) of one :func:`dimer_graph`."""
    return float(energy(dimer_graph(z1, z2, distance))[0])


def periodic_graph(atoms, dtype=torch.float64) -> Graph:
    """The graph of an ASE ``Atoms`` with its cell and periodic boundaries, without a neighbour list."""
    n = len(atoms)
    return Graph(
        z=torch.as_tensor(atoms.numbers, dtype=torch.long),
        pos=torch.as_tensor(atoms.positions, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.long),
        ptr=torch.tensor([0, n]),
        cell=torch.as_tensor(atoms.cell.array, dtype=dtype)[None],
        pbc=torch.as_tensor(atoms.pbc)[None],
    )


def three_molecules() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three random molecules of 5, 9 and 13 atoms (H, C, N, O), always the same ones (seed 0)."""
    rng = np.random.default_rng(0)
    return [random_molecule(n, rng) for n in (5, 9, 13)]


def batch_of_molecules(molecules, dtype=torch.float64) -> Graph:
    """The molecules collated into one batch."""
    return collate([molecule_graph(z, p, dtype) for z, p in molecules])


def rattled_silicon():
    """A rattled cubic diamond cell of eight atoms, carbon for the test heads' elements."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.numbers[:] = 6
    atoms.rattle(0.05, seed=3)
    return atoms


def triclinic_cell():
    """A rattled, sheared cell of four atoms of elements the test heads know."""
    atoms = bulk("NaCl", "rocksalt", a=4.2).repeat((2, 1, 1))
    atoms.numbers[:] = [6, 8, 7, 1]
    atoms.set_cell(atoms.cell.array + [[0.0, 0.1, 0.2], [0.15, 0.0, -0.1], [0.0, 0.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.05, seed=5)
    return atoms


@pytest.fixture
def molecules():
    """:func:`three_molecules`."""
    return three_molecules()


@pytest.fixture
def batch_of(molecules):
    """``batch_of(dtype=torch.float64)``: the ``molecules`` fixture collated into one batch."""

    def make(dtype=torch.float64):
        return batch_of_molecules(molecules, dtype)

    return make
