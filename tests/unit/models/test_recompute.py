"""Blocks recomputed in the backward pass (``Potential.recompute_blocks``, the calculator's
``low_memory``): the same energies, forces, stress and training gradients, fewer saved activations."""

import numpy as np
import pytest
import torch
from ase import Atoms

from dens_lightning.calculator import DensCalculator
from dens_lightning.data.atoms import atoms_graph
from dens_lightning.errors import InputError
from tests.unit.models.test_backbones import make_potential, name  # noqa: F401  (name: the backbone fixture)


def random_cell(n_atoms: int, seed: int = 0) -> Atoms:
    """A periodic cell of H, C, O at about 0.1 atoms/Å^3, positions at random."""
    side = (n_atoms / 0.1) ** (1 / 3)
    rng = np.random.default_rng(seed)
    numbers = rng.choice([1, 6, 8], size=n_atoms)
    return Atoms(numbers=numbers, positions=rng.uniform(0, side, (n_atoms, 3)), cell=[side] * 3, pbc=True)


def evaluation(potential, recompute: bool, create_graph: bool = False) -> dict:
    potential.recompute_blocks(recompute)
    graph = potential.prepare(atoms_graph([random_cell(24)], torch.float64))
    return potential.evaluate(graph, compute_forces=True, create_graph=create_graph, compute_virial=True)


def test_recomputed_blocks_give_the_same_energy_forces_and_virial(name):  # noqa: F811
    potential = make_potential(name, torch.float64)
    kept, recomputed = evaluation(potential, False), evaluation(potential, True)
    for key in ("energy", "forces", "virial"):
        torch.testing.assert_close(recomputed[key], kept[key], rtol=1e-12, atol=1e-12)


def test_recomputed_blocks_give_the_same_force_training_gradients(name):  # noqa: F811
    potential = make_potential(name, torch.float64).train()
    gradients = []
    for recompute in (False, True):
        potential.zero_grad()
        out = evaluation(potential, recompute, create_graph=True)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        gradients.append([p.grad.clone() for p in potential.parameters() if p.grad is not None])
    assert len(gradients[1]) == len(gradients[0]) > 0
    for recomputed, kept in zip(gradients[1], gradients[0], strict=True):
        torch.testing.assert_close(recomputed, kept, rtol=1e-10, atol=1e-10)


def saved_bytes(potential, recompute: bool) -> int:
    """Bytes of the tensors the forward pass keeps for the force backward, outside the recomputed
    blocks (whose own are the checkpoint's to hold: none)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        evaluation(potential, recompute)
    return total


def test_recomputed_blocks_keep_no_activations(name):  # noqa: F811
    potential = make_potential(name, torch.float64)
    kept, recomputed = saved_bytes(potential, False), saved_bytes(potential, True)
    assert recomputed < 0.5 * kept, (recomputed, kept)


def test_the_calculator_in_low_memory_gives_the_same_forces():
    potential = make_potential("painn", torch.float64)
    cell = random_cell(24, seed=1)
    results = []
    for low_memory in (False, True):
        cell.calc = DensCalculator(potential, low_memory=low_memory)
        results.append((cell.get_potential_energy(), cell.get_forces(), cell.get_stress()))
    for recomputed, kept in zip(results[1], results[0], strict=True):
        np.testing.assert_allclose(recomputed, kept, rtol=1e-12, atol=1e-12)
    assert potential.backbone.recompute_blocks


def test_low_memory_is_for_eager_models_only():
    with pytest.raises(InputError, match="low_memory"):
        DensCalculator(make_potential("schnet", torch.float64), compile=True, low_memory=True)
    with pytest.raises(InputError, match="low_memory"):
        DensCalculator("model.pt2", low_memory=True)


def test_blocks_are_kept_by_default(name):  # noqa: F811
    assert not make_potential(name, torch.float64).backbone.recompute_blocks


@pytest.mark.parametrize("stage", ["finetune", "pretrain"])
@pytest.mark.parametrize("recompute", [False, True])
def test_the_task_key_sets_recomputation(stage, recompute):
    from omegaconf import OmegaConf

    from dens_lightning.config import load_config, model_hyperparameters
    from dens_lightning.tasks.finetune import EnergyForceTask
    from dens_lightning.tasks.pretrain import DenoisingPretraining

    cfg = load_config(stage, overrides=[f"task.recompute_blocks={str(recompute).lower()}"])
    model_name, hparams = model_hyperparameters(cfg)
    task = OmegaConf.to_container(cfg.task, resolve=True)
    if stage == "finetune":
        backbone = EnergyForceTask(model_name, hparams, task).potential.backbone
    else:
        backbone = DenoisingPretraining(model_name, hparams, task).backbone
    assert backbone.recompute_blocks is recompute
