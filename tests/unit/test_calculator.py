"""The ASE calculator: the model's energies and forces through ASE, one structure or many."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from scipy.spatial.transform import Rotation

from dens_lightning.artifacts import model_metadata, save_model
from dens_lightning.calculator import DensCalculator
from tests.conftest import molecule_graph, periodic_graph, random_molecule
from tests.unit.models import test_backbones as suite
from tests.unit.test_artifacts import small_potential


@pytest.fixture
def model_file(tmp_path):
    potential = small_potential(torch.float64)
    return save_model(potential, tmp_path / "model.safetensors", model_metadata(potential, stage="finetune"))


def molecule(n: int, seed: int) -> Atoms:
    z, pos = random_molecule(n, np.random.default_rng(seed))
    return Atoms(numbers=z, positions=pos)


def test_calculator_forces_are_the_models(model_file):
    calc = DensCalculator(model_file)
    atoms = molecule(9, 1)
    atoms.calc = calc
    out = calc.potential(molecule_graph(atoms.numbers, atoms.positions))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"][0].detach()), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), rtol=1e-10, atol=1e-12)
    # forces are minus the gradient of the energy ASE sees (central differences)
    step, i = 1e-5, 4
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[i, 0] += sign * step
        moved.calc = calc
        energies.append(moved.get_potential_energy())
    assert atoms.get_forces()[i, 0] == pytest.approx(-(energies[0] - energies[1]) / (2 * step), rel=1e-5)


def test_many_structures_in_one_call_equal_one_by_one(model_file):
    calc = DensCalculator(model_file)
    images = [molecule(n, seed) for seed, n in enumerate((5, 9, 13))]
    cell = bulk("C", "diamond", a=3.57)
    cell.rattle(0.05, seed=4)
    images.insert(1, cell)
    results = calc.batch(images)
    for atoms, result in zip(images, results):
        atoms.calc = calc
        assert result["energy"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(result["forces"], atoms.get_forces(), rtol=1e-10, atol=1e-12)
        assert ("stress" in result) == bool(atoms.pbc.all())
    np.testing.assert_allclose(results[1]["stress"], images[1].get_stress(), rtol=1e-10, atol=1e-12)


def test_periodic_cells_reach_the_model(model_file):
    calc = DensCalculator(model_file)
    atoms = bulk("C", "diamond", a=3.57).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=3)
    atoms.calc = calc
    out = calc.potential(periodic_graph(atoms))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"][0].detach()), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), rtol=1e-10, atol=1e-12)


def test_stress_is_rotation_covariant_and_zero_for_no_interaction():
    calc = DensCalculator(suite.make_potential("painn", torch.float64))
    atoms = suite.triclinic_cell()
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation.T, scale_atoms=True)
    rotated.calc = calc
    np.testing.assert_allclose(rotated.get_stress(voigt=False), rotation @ stress @ rotation.T, atol=1e-10)
    # atoms farther apart than the cutoff in every image: no energy depends on the cell
    sparse = Atoms("CO", positions=[[0, 0, 0], [5, 5, 5]], cell=np.eye(3) * 10.0, pbc=True)
    sparse.calc = calc
    np.testing.assert_allclose(sparse.get_stress(), 0.0, atol=1e-12)


def test_molecules_have_no_stress(model_file):
    atoms = molecule(5, 0)
    atoms.calc = DensCalculator(model_file)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_a_non_finite_position_is_refused_not_left_out_of_the_neighbour_list():
    """A NaN position (a diverged step) would leave its atom without neighbours and the energy finite;
    the model refuses it instead."""
    potential = small_potential(torch.float64)
    atoms = Atoms("CO", positions=[[0.0, 0.0, 0.0], [1.13, 0.0, 0.0]])
    atoms.calc = DensCalculator(potential)
    assert np.isfinite(atoms.get_potential_energy())
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite atomic positions"):
        atoms.get_potential_energy()
