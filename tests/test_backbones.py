"""Physics every registered backbone must satisfy: symmetry, conservative forces, batching,
locality, smoothness and periodic images. A new backbone gets all of these by registering."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy.spatial.transform import Rotation

from dens_lightning.data.graph import collate
from dens_lightning.models import BACKBONES
from dens_lightning.models.potential import Potential

from .conftest import molecule_graph, periodic_graph, random_molecule

SMALL = {
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
    "painn": {"hidden_channels": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
}
DTYPES = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def make_potential(name: str, dtype: torch.dtype) -> Potential:
    torch.manual_seed(0)
    potential = Potential.build(name, SMALL.get(name, {}))
    # non-trivial head statistics, so shifts and scales take part in every check
    potential.energy_head.set_statistics({1: -13.6, 6: -1030.0, 7: -1485.0, 8: -2040.0}, 2.0)
    return potential.to(dtype).eval()


def energy_forces(potential, graph):
    out = potential(graph, compute_forces=True)
    return out["energy"].detach(), out["forces"].detach()


@pytest.fixture(params=sorted(BACKBONES))
def name(request):
    return request.param


@pytest.fixture(params=list(DTYPES), ids=["float32", "float64"])
def dtype(request):
    return request.param


def test_rotation_reflection_translation(name, dtype, molecules):
    potential = make_potential(name, dtype)
    tol = DTYPES[dtype]
    for z, pos in molecules:
        e0, f0 = energy_forces(potential, molecule_graph(z, pos, dtype))
        for seed in range(3):
            rotation = Rotation.random(random_state=seed).as_matrix()
            shift = np.random.default_rng(seed).normal(0, 5, 3)
            e1, f1 = energy_forces(potential, molecule_graph(z, pos @ rotation.T + shift, dtype))
            torch.testing.assert_close(e1, e0, rtol=tol["rtol"], atol=tol["atol"] * 10)
            torch.testing.assert_close(f1, f0 @ torch.as_tensor(rotation.T, dtype=dtype), **tol)
        reflected = pos * np.array([-1.0, 1.0, 1.0])
        e2, f2 = energy_forces(potential, molecule_graph(z, reflected, dtype))
        torch.testing.assert_close(e2, e0, rtol=tol["rtol"], atol=tol["atol"] * 10)
        torch.testing.assert_close(f2, f0 * torch.tensor([-1.0, 1.0, 1.0], dtype=dtype), **tol)


def test_permutation(name, dtype, molecules):
    potential = make_potential(name, dtype)
    z, pos = molecules[2]
    perm = np.random.default_rng(1).permutation(len(z))
    e0, f0 = energy_forces(potential, molecule_graph(z, pos, dtype))
    e1, f1 = energy_forces(potential, molecule_graph(z[perm], pos[perm], dtype))
    torch.testing.assert_close(e1, e0, **DTYPES[dtype])
    torch.testing.assert_close(f1, f0[perm], **DTYPES[dtype])


def test_forces_are_minus_finite_difference_gradient(name, molecules):
    potential = make_potential(name, torch.float64)
    z, pos = molecules[1]
    _, forces = energy_forces(potential, molecule_graph(z, pos))
    h = 1e-5
    numeric = np.zeros_like(pos)
    for atom in range(len(z)):
        for axis in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            e_plus, _ = energy_forces(potential, molecule_graph(z, plus))
            e_minus, _ = energy_forces(potential, molecule_graph(z, minus))
            numeric[atom, axis] = -(e_plus - e_minus).item() / (2 * h)
    assert np.abs(forces.numpy()).max() > 1e-3  # the check is not vacuous
    np.testing.assert_allclose(forces.numpy(), numeric, rtol=1e-5, atol=1e-6)


def test_batch_equals_molecules_one_by_one(name, dtype, batch_of, molecules):
    potential = make_potential(name, dtype)
    energy, forces = energy_forces(potential, batch_of(dtype))
    start = 0
    for k, (z, pos) in enumerate(molecules):
        e, f = energy_forces(potential, molecule_graph(z, pos, dtype))
        torch.testing.assert_close(energy[k : k + 1], e, **DTYPES[dtype])
        torch.testing.assert_close(forces[start : start + len(z)], f, **DTYPES[dtype])
        start += len(z)


def test_no_gradient_leaks_between_molecules(name, batch_of):
    potential = make_potential(name, torch.float64)
    graph = batch_of()
    pos = graph.pos.clone().requires_grad_(True)
    energy = potential(graph.with_positions(pos), compute_forces=False)["energy"]
    (grad,) = torch.autograd.grad(energy[0], pos)
    first = int(graph.ptr[1])
    assert grad[:first].abs().sum() > 0
    assert torch.all(grad[first:] == 0)


def test_energy_smooth_as_atom_crosses_cutoff(name):
    potential = make_potential(name, torch.float64)
    cutoff = potential.cutoff
    z = np.array([8, 6])
    distances = np.linspace(cutoff - 0.02, cutoff + 0.02, 41)
    energies = np.array(
        [
            energy_forces(potential, molecule_graph(z, np.array([[0, 0, 0], [d, 0, 0]])))[0].item()
            for d in distances
        ]
    )
    outside = energies[distances > cutoff]
    assert np.ptp(outside) < 1e-12  # no interaction beyond the cutoff
    steps = np.abs(np.diff(energies))
    assert steps.max() < 1e-6  # no jump as the pair enters the neighbour list


def test_periodic_images_wrapping_changes_nothing(name, dtype):
    potential = make_potential(name, dtype)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.numbers[:] = 6
    atoms.rattle(0.05, seed=3)
    graph = periodic_graph(atoms, dtype)
    e0, f0 = energy_forces(potential, graph)
    shifted = atoms.copy()
    shifted.positions += np.array([1.0, 2.0, 3.0]) * 7.0 + atoms.cell.array.sum(0) * 2  # far outside the cell
    e1, f1 = energy_forces(potential, periodic_graph(shifted, dtype))
    shifted.wrap()
    e2, f2 = energy_forces(potential, periodic_graph(shifted, dtype))
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else DTYPES[dtype]
    torch.testing.assert_close(e1, e0, **tol)
    torch.testing.assert_close(e2, e0, **tol)
    torch.testing.assert_close(f1, f0, **tol)
    torch.testing.assert_close(f2, f0, **tol)
    # a supercell is the same crystal: energy doubles, forces repeat
    e3, f3 = energy_forces(potential, periodic_graph(atoms.repeat((2, 1, 1)), dtype))
    torch.testing.assert_close(e3, 2 * e0, **tol)
    torch.testing.assert_close(f3, torch.cat([f0, f0]), **tol)


def test_float64_model_agrees_with_float32(name):
    rng = np.random.default_rng(5)
    z, pos = random_molecule(8, rng)
    e32, f32 = energy_forces(make_potential(name, torch.float32), molecule_graph(z, pos, torch.float32))
    e64, f64 = energy_forces(make_potential(name, torch.float64), molecule_graph(z, pos, torch.float64))
    torch.testing.assert_close(e32.double(), e64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4)


def test_atomic_number_beyond_embedding_is_refused(name):
    potential = make_potential(name, torch.float64)
    graph = molecule_graph(np.array([6, 150]), np.array([[0, 0, 0], [1.2, 0, 0]]))
    with pytest.raises(ValueError, match="max_z"):
        potential(graph)


def test_collate_keeps_single_and_batched_neighbours_consistent(molecules):
    graphs = [molecule_graph(z, p) for z, p in molecules]
    batch = collate(graphs)
    assert batch.num_graphs == 3
    assert batch.num_atoms.tolist() == [len(z) for z, _ in molecules]
    assert batch.batch.tolist() == sum(([k] * len(z) for k, (z, _) in enumerate(molecules)), [])
