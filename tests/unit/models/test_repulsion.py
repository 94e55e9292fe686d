"""The ZBL short-range repulsion (``model.zbl``): the Coulomb limit, the switch at (a fraction of)
the covalent radii, conservative forces, batching, both neighbour-list orders, and the model file."""

import numpy as np
import pytest
import torch
from ase.data import covalent_radii
from omegaconf import OmegaConf

from dens_lightning.artifacts import load_model, model_metadata, save_model
from dens_lightning.config import model_hyperparameters
from dens_lightning.data.graph import collate
from dens_lightning.data.neighbors import with_neighbors
from dens_lightning.errors import InputError
from dens_lightning.models.potential import Potential
from dens_lightning.models.repulsion import COULOMB, ZBLRepulsion
from dens_lightning.testing.molecules import dimer_energy, molecule_graph, random_molecule

PAINN = {"hidden_channels": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0}


def zbl(switch: float = 1.0) -> ZBLRepulsion:
    return ZBLRepulsion(max_z=100, switch=switch).double()


def zbl_energy(graph, switch: float = 1.0) -> torch.Tensor:
    return zbl(switch)(graph)


def test_two_nuclei_close_together_repel_like_bare_charges():
    for z1, z2 in ((1, 1), (6, 8)):
        r = 1e-3  # Å: screening and switch both ~1
        coulomb = COULOMB * z1 * z2 / r
        assert dimer_energy(zbl(), z1, z2, r) == pytest.approx(coulomb, rel=0.03)
        assert dimer_energy(zbl(), z1, z2, r) < coulomb  # screened


@pytest.mark.parametrize("switch", [1.0, 0.7])
def test_the_repulsion_rises_as_atoms_approach_and_vanishes_from_the_switch_on(switch):
    reach = switch * 2 * covalent_radii[6]
    distances = np.linspace(0.2, reach - 1e-3, 40)
    energies = np.array([dimer_energy(zbl(switch), 6, 6, r) for r in distances])
    assert (energies > 0).all() and (np.diff(energies) < 0).all()
    for r in (reach * (1 + 1e-6), reach + 0.01, 2.0, 3.9):  # the table holds the switch in float32
        assert dimer_energy(zbl(switch), 6, 6, r) == 0.0
    # smooth at the switch: the energy vanishes there like (reach - r)^3 (its force and curvature too)
    h = 1e-3
    near, nearer = (dimer_energy(zbl(switch), 6, 6, reach - d) for d in (2 * h, h))
    assert near / nearer == pytest.approx(8.0, rel=0.05)


def test_a_switch_inside_the_radii_keeps_the_term_off_a_compressed_bond_to_hydrogen():
    r = 0.9  # Å: a C-H bond compressed in a 300 K ethanol frame (covalent radii sum 1.07 Å)
    assert dimer_energy(zbl(), 6, 1, r) > 0.1  # eV
    assert dimer_energy(zbl(0.7), 6, 1, r) == 0.0
    # a collision still repels, with over half the unswitched term
    assert dimer_energy(zbl(0.7), 6, 1, 0.5) > 0.5 * dimer_energy(zbl(), 6, 1, 0.5)


@pytest.mark.parametrize("switch", [0.0, -0.5, 1.5])
def test_a_switch_outside_zero_to_one_is_refused(switch):
    cfg = OmegaConf.create({"model": {"name": "painn", "zbl": True, "zbl_switch": switch}})
    with pytest.raises(InputError, match="zbl_switch"):
        model_hyperparameters(cfg)


def test_forces_are_minus_the_energy_gradient_with_the_repulsion_on():
    torch.manual_seed(0)
    potential = Potential.build("painn", {**PAINN, "zbl": True}).double().eval()
    z, pos = random_molecule(6, np.random.default_rng(1))
    pos = pos * 0.55  # squeezed: several pairs inside their covalent radii
    graph = molecule_graph(z, pos, dtype=torch.float64)
    assert float(potential.repulsion(potential.prepare(graph))[0]) > 0
    forces = potential(graph)["forces"]
    step = 1e-5
    for atom, axis in ((0, 0), (2, 1), (5, 2)):
        shifted = []
        for sign in (1, -1):
            moved = pos.copy()
            moved[atom, axis] += sign * step
            shifted.append(float(potential(molecule_graph(z, moved, dtype=torch.float64))["energy"][0]))
        numeric = -(shifted[0] - shifted[1]) / (2 * step)
        assert float(forces[atom, axis]) == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_a_batch_gives_each_structure_its_own_repulsion():
    rng = np.random.default_rng(2)
    molecules = [random_molecule(n, rng) for n in (3, 7, 5)]
    graphs = [molecule_graph(z, 0.6 * p, dtype=torch.float64) for z, p in molecules]
    alone = torch.cat([zbl_energy(with_neighbors(g, 4.0)) for g in graphs])
    together = zbl_energy(with_neighbors(collate(graphs), 4.0))
    assert (alone > 0).all()
    torch.testing.assert_close(together, alone)


def test_a_list_with_each_pair_in_both_directions_counts_each_pair_once():
    z, pos = random_molecule(6, np.random.default_rng(4))
    graph = with_neighbors(molecule_graph(z, 0.6 * pos, dtype=torch.float64), 4.0)
    half = graph.edge_index.shape[1] // 2
    reversed_halves = graph.replace(
        edge_index=torch.cat([graph.edge_index[:, half:], graph.edge_index[:, :half]], dim=1),
        edge_shift=torch.cat([graph.edge_shift[half:], graph.edge_shift[:half]]),
        paired=False,
    )
    torch.testing.assert_close(zbl_energy(reversed_halves), zbl_energy(graph))


def test_the_setting_travels_with_the_model_file(tmp_path):
    torch.manual_seed(0)
    potential = Potential.build("painn", {**PAINN, "zbl": True, "zbl_switch": 0.8})
    path = save_model(potential, tmp_path / "model.safetensors", model_metadata(potential, "finetune"))
    loaded = load_model(path)
    assert loaded.repulsion is not None
    torch.testing.assert_close(loaded.repulsion.pairs, potential.repulsion.pairs)  # the switch too
    z, pos = random_molecule(5, np.random.default_rng(5))
    graph = molecule_graph(z, 0.6 * pos, dtype=torch.float32)
    torch.testing.assert_close(loaded(graph)["energy"], potential.eval()(graph)["energy"])
    assert Potential.build("painn", dict(PAINN)).repulsion is None  # off unless asked for


def test_an_exported_model_keeps_the_repulsion(tmp_path):
    from ase import Atoms

    from dens_lightning.export import ExportedModel, export_and_check

    torch.manual_seed(0)
    potential = Potential.build("painn", {**PAINN, "zbl": True}).eval()
    potential.metadata = model_metadata(potential, "finetune")
    export_and_check(potential, tmp_path / "model.pt2")
    rng = np.random.default_rng(6)
    images = [Atoms(numbers=z, positions=0.6 * p) for z, p in (random_molecule(n, rng) for n in (4, 9))]
    got, want = ExportedModel(tmp_path / "model.pt2").predict(images), potential(images)
    repulsion, potential.repulsion = potential.repulsion, None
    assert (want["energy"] - potential(images)["energy"] > 1.0).all()  # eV: squeezed, the term counts
    potential.repulsion = repulsion
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], want[key].detach(), atol=1e-5, rtol=1e-5)
