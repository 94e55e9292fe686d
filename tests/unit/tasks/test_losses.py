"""Loss forms (``task.loss``): each term against a hand computation, the norm form's bounded pull,
and the gradient clipping that logs the norm before clipping."""

import numpy as np
import pytest
import torch

from dens_lightning.tasks.clipping import gradient_norm
from dens_lightning.tasks.finetune import EnergyForceTask
from dens_lightning.tasks.losses import vector_loss
from tests.unit.models.test_backbones import SMALL
from tests.unit.tasks.test_dens import labelled_batch

SCALE = 1.3
FORMS = ("squared", "norm")


def task_with(form: str, energy_weight: float = 1.0, forces_weight: float = 1.0) -> EnergyForceTask:
    cfg = {
        "lr": 1e-3,
        "energy_weight": energy_weight,
        "forces_weight": forces_weight,
        "loss": {"energy": form, "forces": form, "noise": form},
    }
    task = EnergyForceTask("schnet", dict(SMALL["schnet"]), cfg).double()
    task.set_statistics({1: -13.6, 6: -1030.0, 7: -1485.0, 8: -2040.0}, SCALE)
    return task


def predictions(batch, spread: float = 1.0, seed: int = 1) -> dict[str, torch.Tensor]:
    """Energies and forces near the labels, as leaves that take gradients."""
    rng = np.random.default_rng(seed)
    energy = batch.energy + spread * torch.as_tensor(rng.normal(size=batch.energy.shape))
    forces = batch.forces + spread * torch.as_tensor(rng.normal(size=batch.forces.shape))
    return {"energy": energy.requires_grad_(True), "forces": forces.requires_grad_(True)}


@pytest.mark.parametrize("form", FORMS)
def test_each_loss_form_matches_a_hand_computation(form):
    batch = labelled_batch()
    out = predictions(batch)
    terms = task_with(form).losses(out, batch)
    de = (out["energy"].detach().numpy() - batch.energy.numpy()) / batch.num_atoms.numpy() / SCALE
    df = (out["forces"].detach().numpy() - batch.forces.numpy()) / SCALE
    if form == "squared":
        energy, forces = np.mean(de**2), np.mean(df**2)
    else:
        energy, forces = np.mean(np.abs(de)), np.mean(np.sqrt((df**2).sum(axis=1)))
    assert terms["energy_loss"].value.item() == pytest.approx(energy, rel=1e-12)
    assert terms["forces_loss"].value.item() == pytest.approx(forces, rel=1e-12)

    # restricted to some atoms and structures (DeNS): the same computation on those rows
    atoms = torch.arange(len(df)) % 3 != 0
    structures = torch.tensor([True, False, True])
    restricted = task_with(form).losses(out, batch, structures=structures, atoms=atoms)
    keep_f, keep_e = atoms.numpy(), structures.numpy()
    if form == "squared":
        energy, forces = np.mean(de[keep_e] ** 2), np.mean(df[keep_f] ** 2)
    else:
        energy = np.mean(np.abs(de[keep_e]))
        forces = np.mean(np.sqrt((df[keep_f] ** 2).sum(axis=1)))
    assert restricted["energy_loss"].value.item() == pytest.approx(energy, rel=1e-12)
    assert restricted["forces_loss"].value.item() == pytest.approx(forces, rel=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_noise_term_matches_a_hand_computation(form):
    rng = np.random.default_rng(3)
    prediction, target = (torch.as_tensor(rng.normal(size=(7, 3))) for _ in range(2))
    mask = torch.tensor([True, False, True, True, False, True, False])
    delta = (prediction - target).numpy()[mask.numpy()]
    expected = np.mean(delta**2) if form == "squared" else np.mean(np.linalg.norm(delta, axis=1))
    assert vector_loss(prediction, target, form, mask).value.item() == pytest.approx(expected, rel=1e-12)


def weighted_pull(task, out, batch) -> tuple[float, float]:
    """Sum over structures of |dL/d(E/s)| and over atoms of ||dL/d(F_i/s)||, L the weighted loss."""
    terms = task.losses(out, batch)
    loss = sum(task.loss_weights[k] * terms[k].value for k in terms)
    grad_e, grad_f = torch.autograd.grad(loss, [out["energy"], out["forces"]])
    return float((grad_e * SCALE).abs().sum()), float((grad_f * SCALE).norm(dim=1).sum())


def test_the_norm_forms_pull_is_its_weight_whatever_the_residuals():
    """A norm term's gradient with respect to its scaled predictions has an L1 norm equal to its
    weight (at most; equal where no residual is zero), for small and huge residuals alike; a squared
    term's grows with the residuals."""
    batch = labelled_batch()
    norm = task_with("norm", energy_weight=2.0, forces_weight=80.0)
    squared = task_with("squared", energy_weight=2.0, forces_weight=80.0)
    pulls = {}
    for spread in (1e-3, 1.0, 1e3):
        out = predictions(batch, spread)
        energy, forces = weighted_pull(norm, out, batch)
        # the energy term is per atom: its pull on a structure's energy is w / N per structure
        per_atom = float((1.0 / batch.num_atoms.double()).mean())
        assert energy == pytest.approx(2.0 * per_atom, rel=1e-9)
        assert forces == pytest.approx(80.0, rel=1e-9)
        pulls[spread] = weighted_pull(squared, out, batch)
    assert pulls[1e3][1] > 1e5 * pulls[1e-3][1]


def test_norm_form_gradient_is_zero_not_nan_at_an_exact_fit():
    batch = labelled_batch()
    out = {
        "energy": batch.energy.clone().requires_grad_(True),
        "forces": batch.forces.clone().requires_grad_(True),
    }
    terms = task_with("norm").losses(out, batch)
    grads = torch.autograd.grad(terms["energy_loss"].value + terms["forces_loss"].value, list(out.values()))
    assert all(torch.all(g == 0) for g in grads)


def test_gradient_norm_ignores_parameters_without_gradient():
    rng = np.random.default_rng(0)
    grads = [torch.as_tensor(rng.normal(size=shape)) for shape in ((4, 3), (7,), (2, 2, 2))]
    expected = np.sqrt(sum(float((g**2).sum()) for g in grads))
    assert float(gradient_norm(grads)) == pytest.approx(expected, rel=1e-12)
    with_zeros = [*grads, torch.zeros(5), None, torch.zeros(3, 3)]
    assert torch.equal(gradient_norm(with_zeros), gradient_norm(grads))  # bit for bit
