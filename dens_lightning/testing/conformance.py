"""The physics every backbone must satisfy, as one class to subclass in a pytest test file:
symmetry, conservative forces, batching, locality, smoothness and periodic images."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ..data.graph import collate
from ..models.potential import Potential
from .molecules import molecule_graph, periodic_graph, random_molecule, rattled_silicon, triclinic_cell
from .noise import ForceEncodingChecks, NoiseChecks
from .potentials import DTYPES, energy_forces


class BackboneConformance(NoiseChecks, ForceEncodingChecks):
    """Every conformance check of one backbone. Subclass it in a test file::

        from dens_lightning.testing import BackboneConformance

        class TestMyNet(BackboneConformance):
            backbone = "mynet"  # a registered backbone name
            hyperparameters = {"hidden": 16, "cutoff": 4.0}  # a small size keeps it fast

    and pytest runs each check as a method of the subclass, in float32 and float64 where the
    precision matters. The end-to-end ``pretrain`` → ``finetune --from`` through the CLI is marked
    ``slow`` (``-m "not slow"`` leaves it out)."""

    __test__ = False

    def test_rotation_reflection_translation(self, dtype, molecules):
        potential = self.make_potential(dtype)
        tol = DTYPES[dtype]
        for z, pos in molecules:
            e0, f0 = energy_forces(potential, molecule_graph(z, pos, dtype))
            for seed in range(3):
                rotation = Rotation.random(random_state=seed).as_matrix()
                shift = np.random.default_rng(seed).normal(0, 5, 3)
                e1, f1 = energy_forces(potential, molecule_graph(z, pos @ rotation.T + shift, dtype))
                torch.testing.assert_close(e1, e0, rtol=tol["rtol"], atol=tol["atol"] * 10)
                torch.testing.assert_close(f1, f0 @ torch.as_tensor(rotation.T, dtype=dtype), **tol)
            if not self.backbone_class.parity:
                continue
            improper = -Rotation.random(random_state=7).as_matrix()  # a rotation times inversion
            e2, f2 = energy_forces(potential, molecule_graph(z, pos @ improper.T, dtype))
            torch.testing.assert_close(e2, e0, rtol=tol["rtol"], atol=tol["atol"] * 10)
            torch.testing.assert_close(f2, f0 @ torch.as_tensor(improper.T, dtype=dtype), **tol)

    def test_permutation(self, dtype, molecules):
        potential = self.make_potential(dtype)
        z, pos = molecules[2]
        perm = np.random.default_rng(1).permutation(len(z))
        e0, f0 = energy_forces(potential, molecule_graph(z, pos, dtype))
        e1, f1 = energy_forces(potential, molecule_graph(z[perm], pos[perm], dtype))
        torch.testing.assert_close(e1, e0, **DTYPES[dtype])
        torch.testing.assert_close(f1, f0[perm], **DTYPES[dtype])

    def test_forces_are_minus_finite_difference_gradient(self, molecules):
        potential = self.make_potential(torch.float64)
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

    def test_force_loss_gradient_in_the_weights_matches_finite_differences(self, molecules):
        """Training differentiates the forces once more, in the weights (double backward): the
        derivative of a force loss along a random direction of all weights against central differences."""
        potential = self.make_potential(torch.float64).train()
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

    def test_batch_equals_molecules_one_by_one(self, dtype, batch_of, molecules):
        potential = self.make_potential(dtype)
        energy, forces = energy_forces(potential, batch_of(dtype))
        start = 0
        for k, (z, pos) in enumerate(molecules):
            e, f = energy_forces(potential, molecule_graph(z, pos, dtype))
            torch.testing.assert_close(energy[k : k + 1], e, **DTYPES[dtype])
            torch.testing.assert_close(forces[start : start + len(z)], f, **DTYPES[dtype])
            start += len(z)

    def test_no_gradient_leaks_between_molecules(self, batch_of):
        potential = self.make_potential(torch.float64)
        graph = batch_of()
        pos = graph.pos.clone().requires_grad_(True)
        energy = potential(graph.with_positions(pos), compute_forces=False)["energy"]
        (grad,) = torch.autograd.grad(energy[0], pos)
        first = int(graph.ptr[1])
        assert grad[:first].abs().sum() > 0
        assert torch.all(grad[first:] == 0)

    def test_energy_smooth_as_atom_crosses_cutoff(self):
        """No interaction beyond the cutoff, no jump in the energy as the pair enters the neighbour list
        and no kink either: the force of the pair goes to zero at the cutoff."""
        potential = self.make_potential(torch.float64)
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

    def test_periodic_images_wrapping_changes_nothing(self, dtype):
        potential = self.make_potential(dtype)
        atoms = rattled_silicon()
        graph = periodic_graph(atoms, dtype)
        e0, f0 = energy_forces(potential, graph)
        shifted = atoms.copy()
        shifted.positions += np.array([1.0, 2.0, 3.0]) * 7.0 + atoms.cell.array.sum(0) * 2  # far outside
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

    def test_stress_is_the_strain_derivative_of_the_energy(self):
        """The analytic stress equals central differences of the energy under strain (ASE's numerical
        stress): the backbone sees geometry only through edge vectors, images included."""
        from ase.calculators.fd import calculate_numerical_stress

        from ..calculator import DensCalculator

        atoms = triclinic_cell()
        atoms.calc = DensCalculator(self.make_potential(torch.float64))
        stress = atoms.get_stress()
        assert np.abs(stress).max() > 1e-4  # the cell is under stress, so the comparison means something
        np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), rtol=1e-5, atol=1e-9)

    def test_float64_model_agrees_with_float32(self):
        rng = np.random.default_rng(5)
        z, pos = random_molecule(8, rng)
        e32, f32 = energy_forces(self.make_potential(torch.float32), molecule_graph(z, pos, torch.float32))
        e64, f64 = energy_forces(self.make_potential(torch.float64), molecule_graph(z, pos, torch.float64))
        torch.testing.assert_close(e32.double(), e64, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(f32.double(), f64, rtol=1e-4, atol=1e-4)

    def test_atomic_number_beyond_embedding_is_refused(self):
        potential = self.make_potential(torch.float64)
        graph = molecule_graph(np.array([6, 150]), np.array([[0, 0, 0], [1.2, 0, 0]]))
        with pytest.raises(ValueError, match="max_z"):
            potential(graph)

    @pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
    def test_paired_list_gives_what_any_order_of_edges_gives(self, periodic, molecules):
        """Backbones compute the radial parts once per pair on a paired list; the same edges in a random
        order, unpaired, must give the same energies and forces."""
        potential = self.make_potential(torch.float64)
        if periodic:
            graph = potential.prepare(periodic_graph(rattled_silicon(), torch.float64))
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

    @pytest.mark.slow
    def test_every_backbone_pretrains_and_finetunes_through_the_cli(self, tmp_path, capsys, monkeypatch):
        """``model.name=<backbone>`` selects it in both stages; the finetune inherits it from --from."""
        from ..artifacts import read_metadata
        from ..cli import main

        if not os.environ.get("DENS_LIGHTNING_CACHE"):  # the generated data set stays out of the user's cache
            monkeypatch.setenv("DENS_LIGHTNING_CACHE", str(tmp_path / "cache"))
        name = self.backbone
        small = [f"model.{key}={value}" for key, value in self.hyperparameters.items()]
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
        finetune = [
            "finetune",
            "--from",
            str(pretrained),
            "--run-dir",
            str(tuned),
            *data,
            "data.batch_size=4",
        ]
        assert main([*finetune, "data.embedded.samples=6", "trainer.max_epochs=1"]) == 0
        assert "loaded all" in capsys.readouterr().out
        metadata = read_metadata(tuned / "model.safetensors")
        assert metadata["backbone"]["name"] == name
        assert (
            metadata["backbone"]["hyperparameters"]
            == Potential.build(name, dict(self.hyperparameters)).backbone.hyperparameters()
        )
        assert metadata["test_metrics"]["forces_mae_meV_per_A"] > 0
