"""Physics every registered backbone must satisfy: symmetry, conservative forces, batching,
locality, smoothness and periodic images. A new backbone gets all of these by registering."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy.spatial.transform import Rotation

from dens_lightning.data.graph import collate
from dens_lightning.models import BACKBONES
from dens_lightning.models.heads import EdgeNoiseHead, build_noise_head
from dens_lightning.models.potential import Potential
from dens_lightning.tasks.pretrain import DenoisingPretraining

from .conftest import molecule_graph, periodic_graph, random_molecule

# small sizes keep the suite fast; a backbone without an entry is checked at its default size
SMALL = {
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
    "painn": {"hidden_channels": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
    "equiformer": {
        "num_channels": 8,
        "num_layers": 2,
        "num_heads": 2,
        "attention_channels": 4,
        "num_rbf": 10,
        "radial_hidden": 16,
        "ffn_channels": 8,
        "cutoff": 4.0,
    },
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
        if not BACKBONES[name].parity:
            continue
        improper = -Rotation.random(random_state=7).as_matrix()  # a rotation times inversion
        e2, f2 = energy_forces(potential, molecule_graph(z, pos @ improper.T, dtype))
        torch.testing.assert_close(e2, e0, rtol=tol["rtol"], atol=tol["atol"] * 10)
        torch.testing.assert_close(f2, f0 @ torch.as_tensor(improper.T, dtype=dtype), **tol)


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


def test_force_loss_gradient_in_the_weights_matches_finite_differences(name, molecules):
    """Training differentiates the forces once more, in the weights (double backward): the
    derivative of a force loss along a random direction of all weights against central differences."""
    potential = make_potential(name, torch.float64).train()
    z, pos = molecules[1]
    graph = molecule_graph(z, pos)
    generator = torch.Generator().manual_seed(3)
    target = torch.randn(len(z), 3, generator=generator, dtype=torch.float64)
    parameters = list(potential.parameters())
    direction = [torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in parameters]

    def loss() -> torch.Tensor:
        return ((potential(graph, create_graph=True)["forces"] - target) ** 2).sum()

    gradients = torch.autograd.grad(loss(), parameters, allow_unused=True)
    analytic = sum(float((g * d).sum()) for g, d in zip(gradients, direction) if g is not None)
    h = 1e-6
    values = []
    with torch.no_grad():
        originals = [p.clone() for p in parameters]
    for sign in (1, -1):
        with torch.no_grad():
            for p, p0, d in zip(parameters, originals, direction):
                p.copy_(p0 + sign * h * d)
        values.append(float(loss().detach()))
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic) > 1e-3  # the check is not vacuous
    assert analytic == pytest.approx(numeric, rel=1e-6)


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
    """No interaction beyond the cutoff, no jump in the energy as the pair enters the neighbour list
    and no kink either: the force of the pair goes to zero at the cutoff."""
    potential = make_potential(name, torch.float64)
    cutoff = potential.cutoff
    z = np.array([8, 6])

    def pair(d):
        return energy_forces(potential, molecule_graph(z, np.array([[0, 0, 0], [d, 0, 0]])))

    distances = np.linspace(cutoff - 0.02, cutoff + 0.02, 41)
    energies = np.array([pair(d)[0].item() for d in distances])
    outside = energies[distances > cutoff]
    assert np.ptp(outside) < 1e-12  # no interaction beyond the cutoff
    assert np.ptp(energies) > 1e-9  # the pair does interact inside: the checks below are not vacuous
    energy_edge, forces_edge = pair(cutoff - 1e-4)
    assert abs(energy_edge.item() - outside[0]) < 1e-8  # continuous
    _, forces_inside = pair(cutoff - 0.02)
    assert forces_edge.abs().max() < 1e-2 * forces_inside.abs().max()  # the force vanishes at the cutoff


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


def triclinic_cell():
    """A rattled, sheared cell of four atoms of elements the test heads know."""
    atoms = bulk("NaCl", "rocksalt", a=4.2).repeat((2, 1, 1))
    atoms.numbers[:] = [6, 8, 7, 1]
    atoms.set_cell(atoms.cell.array + [[0.0, 0.1, 0.2], [0.15, 0.0, -0.1], [0.0, 0.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.05, seed=5)
    return atoms


def test_stress_is_the_strain_derivative_of_the_energy(name):
    """The analytic stress equals central differences of the energy under strain (ASE's numerical
    stress): the backbone sees geometry only through edge vectors, images included."""
    from ase.calculators.fd import calculate_numerical_stress

    from dens_lightning.calculator import DensCalculator

    atoms = triclinic_cell()
    atoms.calc = DensCalculator(make_potential(name, torch.float64))
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-4  # the cell is under stress, so the comparison means something
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), rtol=1e-5, atol=1e-9)


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
    # graphs with their lists collate into one paired list: the batch's own list, edge for edge
    potential = make_potential("schnet", torch.float64)
    merged = collate([potential.prepare(g) for g in graphs])
    built = potential.prepare(batch)
    assert merged.paired and built.paired
    assert torch.equal(merged.edge_index, built.edge_index)
    assert torch.equal(merged.edge_shift, built.edge_shift)


@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
def test_paired_list_gives_what_any_order_of_edges_gives(name, periodic, molecules):
    """Backbones compute the radial parts once per pair on a paired list; the same edges in a random
    order, unpaired, must give the same energies and forces."""
    potential = make_potential(name, torch.float64)
    if periodic:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.numbers[:] = 6
        atoms.rattle(0.05, seed=3)
        graph = potential.prepare(periodic_graph(atoms, torch.float64))
    else:
        graph = potential.prepare(collate([molecule_graph(z, p, torch.float64) for z, p in molecules]))
    assert graph.paired
    order = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = graph.replace(
        edge_index=graph.edge_index[:, order], edge_shift=graph.edge_shift[order], paired=False
    )
    e0, f0 = energy_forces(potential, graph)
    e1, f1 = energy_forces(potential, shuffled)
    torch.testing.assert_close(e1, e0, **DTYPES[torch.float64])
    torch.testing.assert_close(f1, f0, **DTYPES[torch.float64])


# ------------------------------------------------------------------ noise heads


def make_noise_predictor(name: str, dtype: torch.dtype, blocks: int = 0) -> DenoisingPretraining:
    torch.manual_seed(0)
    noise = {"sigma": 0.1, "head_blocks": blocks}
    task = DenoisingPretraining(name, dict(SMALL.get(name, {})), {"lr": 1e-3, "noise": noise})
    return task.to(dtype).eval()


@pytest.fixture(params=[0, 1], ids=["readout", "message-passing head"])
def head_blocks(request):
    return request.param


def predict_noise(task, z, pos, dtype):
    graph = molecule_graph(z, pos, dtype)
    return task.predict_noise(graph, graph.pos).detach()


def test_noise_prediction_is_equivariant(name, dtype, head_blocks, molecules):
    """The noise head's output is a vector per atom: it rotates (and reflects, where the backbone
    claims parity) with the molecule, ignores translations and follows a permutation of the atoms;
    with a message-passing block before its readout too."""
    task = make_noise_predictor(name, dtype, head_blocks)
    assert len(task.noise_head.message_blocks) == head_blocks
    tol = DTYPES[dtype]
    for z, pos in molecules:
        n0 = predict_noise(task, z, pos, dtype)
        assert n0.abs().max() > 1e-4  # the checks are not vacuous
        transforms = [Rotation.random(random_state=seed).as_matrix() for seed in range(2)]
        if BACKBONES[name].parity:
            transforms.append(-Rotation.random(random_state=9).as_matrix())
        for k, matrix in enumerate(transforms):
            shift = np.random.default_rng(k).normal(0, 5, 3)
            n1 = predict_noise(task, z, pos @ matrix.T + shift, dtype)
            torch.testing.assert_close(n1, n0 @ torch.as_tensor(matrix.T, dtype=dtype), **tol)
        perm = np.random.default_rng(2).permutation(len(z))
        torch.testing.assert_close(predict_noise(task, z[perm], pos[perm], dtype), n0[perm], **tol)


def test_noise_prediction_of_a_batch_equals_molecules_one_by_one(
    name, dtype, head_blocks, batch_of, molecules
):
    task = make_noise_predictor(name, dtype, head_blocks)
    graph = batch_of(dtype)
    batched = task.predict_noise(graph, graph.pos).detach()
    one_by_one = torch.cat([predict_noise(task, z, pos, dtype) for z, pos in molecules])
    torch.testing.assert_close(batched, one_by_one, **DTYPES[dtype])


@pytest.mark.parametrize("blocks", [0, 1])
def test_edge_noise_head_is_equivariant_batches_and_ignores_edge_order(blocks, molecules):
    """DeNS's noise head for scalar-only backbones (no derivative), with and without a SchNet
    interaction before it: it rotates and reflects with the molecule, ignores translations, follows
    a permutation of the atoms, gives on a batch what it gives on each molecule, and gives the same
    on a shuffled unpaired edge list."""
    potential = make_potential("schnet", torch.float64)
    head = build_noise_head(potential.backbone, differentiate=False, blocks=blocks).double()
    assert isinstance(head, EdgeNoiseHead) and len(head.message_blocks) == blocks
    assert not head.needs_position_grad
    tol = DTYPES[torch.float64]

    def noise(graph):
        graph = potential.prepare(graph)
        return head(potential.backbone(graph), graph).detach()

    for z, pos in molecules:
        n0 = noise(molecule_graph(z, pos))
        assert n0.abs().max() > 1e-4
        for k, matrix in enumerate([Rotation.random(random_state=1).as_matrix(), -np.eye(3)]):
            shift = np.random.default_rng(k).normal(0, 5, 3)
            moved = noise(molecule_graph(z, pos @ matrix.T + shift))
            torch.testing.assert_close(moved, n0 @ torch.as_tensor(matrix.T), **tol)
        perm = np.random.default_rng(2).permutation(len(z))
        torch.testing.assert_close(noise(molecule_graph(z[perm], pos[perm])), n0[perm], **tol)
    graph = potential.prepare(collate([molecule_graph(z, p) for z, p in molecules]))
    batched = noise(graph)
    torch.testing.assert_close(batched, torch.cat([noise(molecule_graph(z, p)) for z, p in molecules]), **tol)
    order = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = graph.replace(
        edge_index=graph.edge_index[:, order], edge_shift=graph.edge_shift[order], paired=False
    )
    torch.testing.assert_close(noise(shuffled), batched, **tol)


# ------------------------------------------------------------------ per-atom inputs (DeNS force encoding)


def test_backbones_without_force_encoding_refuse_node_inputs(name, molecules):
    if BACKBONES[name].supports_force_encoding:
        pytest.skip(f"{name} takes per-atom inputs")
    potential = make_potential(name, torch.float64)
    graph = molecule_graph(*molecules[0])
    with pytest.raises(ValueError, match="per-atom inputs"):
        potential(graph, node_inputs={"irreps": torch.zeros(len(molecules[0][0]), 4)})


@pytest.mark.parametrize("name", [n for n in sorted(BACKBONES) if BACKBONES[n].supports_force_encoding])
def test_encoded_forces_enter_equivariantly_and_only_where_masked(name, molecules):
    """DeNS force encoding through the backbone's own encoder: inputs are exactly zero outside the
    mask (an empty mask is the same as no inputs); encoded forces change the output; rotating (and
    reflecting) the molecule and the given forces together rotates forces and noise predictions and
    leaves the energy unchanged; a wrong shape is refused."""
    potential = make_potential(name, torch.float64)
    encoder = potential.backbone.make_force_encoder().double()
    encoder.set_force_scale(0.7)
    head = build_noise_head(potential.backbone, differentiate=False, blocks=1).double()  # as DeNS builds it
    z, pos = molecules[1]
    given = torch.as_tensor(np.random.default_rng(4).normal(size=(len(z), 3)))
    mask = torch.zeros(len(z), dtype=torch.bool)
    mask[::2] = True

    def run(positions, forces, atoms, encode=True):
        graph = molecule_graph(z, positions)
        graph = potential.prepare(graph.with_positions(graph.pos.requires_grad_(True)))
        inputs = encoder(graph, forces, atoms) if encode else None
        out = potential(graph, node_inputs=inputs, create_graph=True)
        noise = head(out["features"], graph)
        return inputs, [out["energy"].detach(), out["forces"].detach(), noise.detach()]

    _, plain = run(pos, given, torch.zeros_like(mask))
    _, no_inputs = run(pos, given, mask, encode=False)
    for a, b in zip(plain, no_inputs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    inputs, encoded = run(pos, given, mask)
    for value in inputs.values():
        assert torch.all(value[~mask] == 0) and value[mask].abs().max() > 0
    assert (encoded[1] - plain[1]).abs().max() > 1e-4

    matrix = -Rotation.random(random_state=3).as_matrix() if BACKBONES[name].parity else None
    matrix = Rotation.random(random_state=3).as_matrix() if matrix is None else matrix
    rotation = torch.as_tensor(matrix)
    _, turned = run(pos @ matrix.T, given @ rotation.T, mask)
    tol = DTYPES[torch.float64]
    torch.testing.assert_close(turned[0], encoded[0], **tol)
    torch.testing.assert_close(turned[1], encoded[1] @ rotation.T, **tol)
    torch.testing.assert_close(turned[2], encoded[2] @ rotation.T, **tol)

    key, value = next(iter(inputs.items()))
    with pytest.raises(ValueError, match="must have shape"):
        potential(molecule_graph(z, pos), node_inputs={key: value[:, :1]})


# ------------------------------------------------------------------ through the CLI


@pytest.mark.slow
def test_every_backbone_pretrains_and_finetunes_through_the_cli(name, tmp_path, capsys):
    """``model.name=<backbone>`` selects it in both stages; the finetune inherits it from --from."""
    from dens_lightning.artifacts import read_metadata
    from dens_lightning.cli import main

    small = [f"model.{key}={value}" for key, value in SMALL.get(name, {}).items()]
    data = ["--no-progress", "data.embedded.smiles=[CCO,CC(=O)O]", "data.embedded.conformers=2"]
    pretrained, tuned = tmp_path / "pre", tmp_path / "ft"
    pretrain = [
        "pretrain",
        "--run-dir",
        str(pretrained),
        *data,
        "data.embedded.smiles_file=null",
        "data.embedded.samples=10",
        "data.batch_size=8",
    ]
    assert main([*pretrain, f"model.name={name}", *small, "trainer.max_epochs=1"]) == 0
    finetune = ["finetune", "--from", str(pretrained), "--run-dir", str(tuned), *data, "data.batch_size=4"]
    assert main([*finetune, "data.embedded.samples=6", "trainer.max_epochs=1"]) == 0
    assert "loaded all" in capsys.readouterr().out
    metadata = read_metadata(tuned / "model.safetensors")
    assert metadata["backbone"]["name"] == name
    assert (
        metadata["backbone"]["hyperparameters"]
        == Potential.build(name, SMALL.get(name, {})).backbone.hyperparameters()
    )
    assert metadata["test_metrics"]["forces_mae_meV_per_A"] > 0


def test_a_backbone_range_check_names_the_keys(tmp_path, capsys):
    from dens_lightning.cli import main

    argv = ["finetune", "--run-dir", str(tmp_path / "r"), "model.name=equiformer", "model.num_heads=3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "model.num_heads=3" in err and "model.num_channels" in err and "\n" not in err
