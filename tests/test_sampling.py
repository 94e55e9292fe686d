"""The embedded default: RDKit conformers, perturbation, and labels that are consistent."""

import importlib.util

import numpy as np
import pytest

from dens_lightning.data.sampling import conformers, label_mmff, label_xtb, perturb
from dens_lightning.errors import InputError

LABELLERS = ["mmff"] + (["xtb"] if importlib.util.find_spec("tblite") else [])


@pytest.mark.parametrize("labeller", LABELLERS)
def test_label_forces_are_minus_the_energy_gradient(labeller):
    mol, numbers, minima = conformers("CCO", 1, seed=1)
    positions = perturb(minima[0], 0.03, np.random.default_rng(0))

    def label(p):
        return label_mmff(mol, p) if labeller == "mmff" else label_xtb(numbers, p)

    _, forces = label(positions)
    h = 1e-4
    for atom, axis in [(0, 0), (2, 1), (5, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(label(plus)[0] - label(minus)[0]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_conformers_are_seeded_and_hydrogenated():
    _, numbers, first = conformers("CC(=O)O", 2, seed=5)
    _, _, second = conformers("CC(=O)O", 2, seed=5)
    assert sorted(numbers.tolist()) == [1, 1, 1, 1, 6, 6, 8, 8]
    np.testing.assert_allclose(first[0], second[0])


def test_bad_smiles_is_named():
    with pytest.raises(InputError, match="C1CC"):
        conformers("C1CC", 1, seed=0)
