"""DeNS (Liao et al. 2024): corruption, masks, weight schedule, the finetune auxiliary task, DeNS
pretraining, and multi-process safety."""

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dens_lightning.artifacts import read_metadata
from dens_lightning.cli import main
from dens_lightning.data.graph import collate
from dens_lightning.tasks.config import LossConfig
from dens_lightning.tasks.dens import DENS, Corruption, dens_weight, draw, structures_with
from dens_lightning.tasks.finetune import EnergyForceTask
from dens_lightning.tasks.losses import vector_loss
from tests.conftest import TINY_EMBEDDED, molecule_graph, random_molecule
from tests.unit.models.test_backbones import SMALL

DENS_TASK = {
    "lr": 1e-3,
    "energy_weight": 1.0,
    "forces_weight": 1.0,
    "dens": {
        "enabled": True,
        "probability": 0.5,
        "corrupt_ratio": 0.5,
        "sigma": 0.05,
        "sigma_max": None,
        "weight": 5.0,
        "decay": "linear",
        "force_encoding": True,
        "energy_on_corrupted": False,
    },
}
FAST = ["--no-progress", *TINY_EMBEDDED, "data.batch_size=4", "task.warmup_steps=2", "task.ema_decay=null"]
SCHNET_TINY = ["model.name=schnet", *(f"model.{k}={v}" for k, v in SMALL["schnet"].items())]


def labelled_batch(sizes=(5, 8, 11), seed=0):
    """Random molecules with random labels; each keeps its index in the batch as ``idx``."""
    rng = np.random.default_rng(seed)
    graphs = []
    for k, n in enumerate(sizes):
        z, pos = random_molecule(n, rng)
        graph = molecule_graph(z, pos, energy=float(rng.normal()), forces=rng.normal(size=(n, 3)))
        graphs.append(graph.replace(idx=torch.tensor([k])))
    return collate(graphs)


def dens_task(name="schnet", **dens):
    torch.manual_seed(0)
    task_cfg = {**DENS_TASK, "dens": {**DENS_TASK["dens"], **dens}}
    task = EnergyForceTask(name, dict(SMALL[name]), task_cfg).double()
    task.set_statistics({1: -13.6, 6: -1030.0, 7: -1485.0, 8: -2040.0}, 1.3)
    return task


# ------------------------------------------------------------------ schedule and draws


def test_no_structure_is_corrupted_before_the_start_step_and_the_same_ones_after():
    """``start_step``: plain training before it; from it on, the same draws as without a start."""
    batch = labelled_batch(sizes=(4,) * 40)
    delayed, immediate = dens_task(start_step=10), dens_task(start_step=0)
    for step in (0, 9):
        assert not delayed.dens_corruption(batch, step=step).mask.any()
        assert immediate.dens_corruption(batch, step=step).mask.any()
    for step in (10, 11):
        late, now = delayed.dens_corruption(batch, step=step), immediate.dens_corruption(batch, step=step)
        assert late.mask.any() and torch.equal(late.mask, now.mask) and torch.equal(late.pos, now.pos)


def test_dens_weight_falls_linearly_to_zero():
    assert dens_weight(5.0, "linear", 0, 100) == 5.0
    assert dens_weight(5.0, "linear", 50, 100) == pytest.approx(2.5)
    assert dens_weight(5.0, "linear", 100, 100) == 0.0
    assert dens_weight(5.0, "none", 100, 100) == 5.0


def test_draws_are_keyed_by_structure_and_leave_the_global_rng_alone():
    """A structure draws the same numbers at a step whatever batch it is in (so 2 devices of batch B
    draw what 1 device of batch 2B does); another step or seed draws others."""
    batch = labelled_batch(sizes=(5, 8, 11))
    state = torch.get_rng_state()
    whole = draw(batch, 3, DENS, 10)
    for k in (2, 0, 1):
        single = draw(batch_member(batch, k), 3, DENS, 10)  # the k-th structure alone
        atoms = slice(int(batch.ptr[k]), int(batch.ptr[k + 1]))
        torch.testing.assert_close(single.structure[0], whole.structure[k], rtol=0, atol=0)
        torch.testing.assert_close(single.normal, whole.normal[atoms], rtol=0, atol=0)
        torch.testing.assert_close(single.atom, whole.atom[atoms], rtol=0, atol=0)
    assert not torch.equal(draw(batch, 3, DENS, 11).normal, whole.normal)
    assert not torch.equal(draw(batch, 4, DENS, 10).normal, whole.normal)
    assert torch.equal(torch.get_rng_state(), state)
    many = draw(labelled_batch(sizes=(2,) * 64), 3, DENS, 0).structure
    assert 16 < int((many[:, 1] < 0.5).sum()) < 48
    assert abs(float(many.mean()) - 0.5) < 0.1


def batch_member(batch, k):
    """Structure ``k`` of a labelled batch as a one-structure graph that keeps its index."""
    start, stop = int(batch.ptr[k]), int(batch.ptr[k + 1])
    return molecule_graph(
        batch.z[start:stop],
        batch.pos[start:stop],
        energy=float(batch.energy[k]),
        forces=batch.forces[start:stop],
    ).replace(idx=torch.tensor([k]))


# ------------------------------------------------------------------ masks


def test_force_loss_covers_uncorrupted_atoms_and_energy_loss_uncorrupted_structures():
    """With ``energy_on_corrupted=false``, labels of corrupted atoms (forces) and of structures holding
    one (energies) do not enter the energy/force loss; the noise loss is the MSE over the corrupted
    atoms only."""
    task = dens_task().train()
    batch = labelled_batch()
    corruption = task.dens_corruption(batch, step=0)
    mask = corruption.mask
    touched = structures_with(mask, batch)
    assert mask.any() and (~mask).any() and touched.any() and (~touched).any()

    def parts_for(labels):
        out, predicted = task.dens_forward(labels, corruption)
        parts = task.losses(out, labels, structures=~structures_with(mask, labels), atoms=~mask)
        return parts, predicted, out

    parts, predicted, out = parts_for(batch)
    garbage = batch.replace(
        forces=torch.where(mask[:, None], batch.forces + 100.0, batch.forces),
        energy=torch.where(touched, batch.energy + 1e4, batch.energy),
    )
    # the encoder reads the labelled forces: keep them, change only what the losses read
    out_g = dict(out)
    parts_g = task.losses(out_g, garbage, structures=~touched, atoms=~mask)
    torch.testing.assert_close(parts_g["forces_loss"].value, parts["forces_loss"].value)
    torch.testing.assert_close(parts_g["energy_loss"].value, parts["energy_loss"].value)

    scale = task.loss_scale
    expected_f = ((out["forces"] - batch.forces)[~mask] / scale).pow(2).mean()
    per_atom = (out["energy"] - batch.energy) / batch.num_atoms
    expected_e = (per_atom[~touched] / scale).pow(2).mean()
    torch.testing.assert_close(parts["forces_loss"].value, expected_f)
    torch.testing.assert_close(parts["energy_loss"].value, expected_e)
    noise = vector_loss(predicted, corruption.target, "squared", mask).value
    torch.testing.assert_close(noise, (predicted - corruption.target)[mask].pow(2).mean())


@pytest.mark.parametrize("form", ["squared", "norm"])
def test_forces_on_corrupted_false_keeps_only_clean_structures_in_the_force_loss(form):
    """Uncorrupted atoms next to a displaced one keep labels of the undisplaced structure; with
    ``forces_on_corrupted=false`` no atom of a corrupted structure enters the force loss, and the
    diagnostics report the force error on both groups of uncorrupted atoms."""
    task = dens_task(forces_on_corrupted=False).train()
    task.task_cfg.loss = LossConfig(energy=form, forces=form, noise=form)
    batch = labelled_batch(sizes=(5, 8, 11, 6))
    corruption = task.dens_corruption(batch, step=0)
    touched = structures_with(corruption.mask, batch)
    assert touched.any() and (~touched).any()
    terms = task.dens_terms(batch, corruption)
    out, predicted = task.dens_forward(batch, corruption)
    clean = ~touched[batch.batch]
    delta = (out["forces"] - batch.forces)[clean] / task.loss_scale
    expected = delta.pow(2).mean() if form == "squared" else delta.norm(dim=1).mean()
    torch.testing.assert_close(terms["forces_loss"].value, expected)
    errors = 1e3 * (out["forces"] - batch.forces).abs().detach()
    torch.testing.assert_close(terms["forces_mae_clean"].value, errors[clean].mean())
    beside = ~clean & ~corruption.mask
    torch.testing.assert_close(terms["forces_mae_beside_noise"].value, errors[beside].mean())
    delta = predicted[corruption.mask] - corruption.target[corruption.mask]
    expected = delta.pow(2).mean() if form == "squared" else delta.norm(dim=1).mean()
    torch.testing.assert_close(terms["noise_loss"].value, expected)


def test_encoded_forces_reach_only_corrupted_atoms_and_fixed_atoms_never_move():
    task = dens_task("painn", corrupt_ratio=1.0, probability=1.0)
    batch = labelled_batch()
    fixed = torch.zeros(batch.pos.shape[0], dtype=torch.bool)
    fixed[:3] = True
    batch = batch.replace(fixed=fixed)
    corruption = task.dens_corruption(batch, step=0)
    assert not corruption.mask[:3].any() and corruption.mask[3:].all()
    torch.testing.assert_close(corruption.pos[:3], batch.pos[:3], rtol=0, atol=0)
    graph = task.potential.prepare(batch.with_positions(corruption.pos))
    inputs = task.force_encoder(graph, batch.forces, corruption.mask)
    for value in inputs.values():
        assert torch.all(value[:3] == 0) and torch.all(
            value[3:].abs().sum(dim=tuple(range(1, value.dim()))) > 0
        )


def test_multiscale_sigma_per_structure():
    task = dens_task(probability=1.0, corrupt_ratio=1.0, sigma=0.01, sigma_max=0.5)
    corruption: Corruption = task.dens_corruption(labelled_batch(sizes=(4,) * 40), step=1)
    per_structure = corruption.sigma.view(40, 4)[:, 0]
    assert per_structure.min() >= 0.01 and per_structure.max() <= 0.5
    assert per_structure.max() / per_structure.min() > 5


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_batch_without_corrupted_atoms_keeps_every_parameter_in_the_graph(name):
    """With probability 0 nothing is corrupted, yet the noise head and the encoder get (zero)
    gradients: DDP finds no unused parameter and never hangs."""
    task = dens_task(name, probability=0.0).train()
    loss, logged = task.dens_losses(labelled_batch())
    assert logged["noise_loss"].item() == 0.0
    loss.backward()
    for module in (task.noise_head, task.force_encoder, task.potential):
        for pname, parameter in module.named_parameters():
            assert parameter.grad is not None, pname


# ------------------------------------------------------------------ through the CLI


def train_losses(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    steps = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    return steps, val


def val_metrics(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [(r["val/forces_mae_meV_per_A"], r["val/energy_mae_meV"]) for r in rows if r.get("val/loss")]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["norm", "squared"])
def test_probability_zero_trains_exactly_like_plain_training(form, tmp_path):
    """With the default EMA and gradient clipping (which the DeNS modules' zero gradients must not
    perturb), PaiNN with DeNS at probability 0 trains step for step as without DeNS, in both loss
    forms."""
    common = [
        "finetune",
        "--no-progress",
        *TINY_EMBEDDED,
        "data.batch_size=4",
        "task.warmup_steps=2",
        "model.name=painn",
        *[f"model.{k}={v}" for k, v in SMALL["painn"].items()],
        f"task.loss.energy={form}",
        f"task.loss.forces={form}",
        f"task.loss.noise={form}",
        "trainer.gradient_clip_val=0.5",  # small enough that clipping acts on most steps
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "seed=3",
    ]
    assert main([*common, "--run-dir", str(tmp_path / "plain")]) == 0
    dens = ["task.dens.enabled=true", "task.dens.probability=0"]
    assert main([*common, "--run-dir", str(tmp_path / "dens0"), *dens]) == 0
    plain, dens0 = train_losses(tmp_path / "plain"), train_losses(tmp_path / "dens0")
    assert len(plain[0]) > 10 and plain[1]
    assert plain == dens0  # the same numbers, step by step
    assert val_metrics(tmp_path / "plain") == val_metrics(tmp_path / "dens0")
    with open(tmp_path / "plain" / "metrics.csv") as handle:
        norms = [
            float(r["train/grad_norm_step"]) for r in csv.DictReader(handle) if r.get("train/grad_norm_step")
        ]
    assert sum(n > 0.5 for n in norms) > len(norms) // 2  # clipping did act


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_dens_finetune_through_the_cli(name, tmp_path):
    small = [f"model.{k}={v}" for k, v in SMALL[name].items()]
    argv = ["finetune", "--run-dir", str(tmp_path / "run"), *FAST, f"model.name={name}", *small]
    dens = ["task.dens.enabled=true", "task.dens.probability=0.5", "task.dens.diagnostics_every_n_steps=2"]
    dens.append("task.dens.head_blocks=1")  # a message-passing noise head
    assert main([*argv, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", *dens]) == 0
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    noise = [float(r["train/noise_loss_step"]) for r in rows if r.get("train/noise_loss_step")]
    weights = [float(r["train/dens_weight_step"]) for r in rows if r.get("train/dens_weight_step")]
    assert noise and any(v > 0 for v in noise)
    assert weights[0] > weights[-1]  # linear decay
    for diagnostic in ("forces_mae_clean", "forces_mae_beside_noise", "grad_norm", "grad_norm_noise"):
        values = [float(r[f"train/{diagnostic}_step"]) for r in rows if r.get(f"train/{diagnostic}_step")]
        assert values and all(np.isfinite(values)) and max(values) > 0, diagnostic
    assert any(r.get("val/noise_loss") for r in rows) is False  # validation never corrupts
    metadata = read_metadata(tmp_path / "run" / "model.safetensors")
    assert metadata["data"]["dens"]["probability"] == 0.5
    assert not any(
        k.startswith(("noise_head.", "force_encoder."))
        for k in load_file(tmp_path / "run" / "model.safetensors")
    )


@pytest.mark.slow
def test_dens_pretraining_on_labelled_data_then_finetune(tmp_path, capsys):
    data = tmp_path / "labelled"
    finetune_data = ["finetune", "--run-dir", str(data), *FAST, *SCHNET_TINY, "trainer.max_epochs=1"]
    assert main(finetune_data) == 0  # writes the embedded labelled set to the cache; find it
    from dens_lightning.data.embedded import cache_dir

    labelled = sorted(cache_dir().glob("embedded-*.extxyz"))[0]
    pre = tmp_path / "pre"
    argv = ["pretrain", "--run-dir", str(pre), "--no-progress", f"data.path={labelled}", *SCHNET_TINY]
    argv += [
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "task.dens.enabled=true",
        "task.noise.atom_fraction=0.5",
    ]
    assert main(argv) == 0
    tensors = load_file(str(pre / "model.safetensors"))
    assert any(k.startswith("force_encoder.") for k in tensors)
    assert read_metadata(pre / "model.safetensors")["noise"]["force_encoding"] is True
    tuned = ["finetune", "--from", str(pre), "--run-dir", str(tmp_path / "ft"), *FAST, "trainer.max_epochs=1"]
    capsys.readouterr()
    assert main([*tuned, "task.dens.enabled=true"]) == 0
    assert "loaded the pretrained DeNS force encoder" in capsys.readouterr().out


def test_dens_pretraining_needs_forces(tmp_path, capsys):
    argv = ["pretrain", "--run-dir", str(tmp_path / "r"), "data.embedded.limit=2", "task.dens.enabled=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no forces found" in err and "task.dens.force_encoding=false" in err and "\n" not in err


def test_energy_on_corrupted_fits_every_structure_energy_to_its_original_label():
    """``energy_on_corrupted=true``, the reference code's choice: one pass at the corrupted
    positions, the energy loss over all structures against the original energies; forces still
    only for uncorrupted atoms."""
    task = dens_task(energy_on_corrupted=True).train()
    batch = labelled_batch()
    _, parts = task.dens_losses(batch)  # step 0 outside a trainer: the same draws as below
    corruption = task.dens_corruption(batch, step=0)
    assert structures_with(corruption.mask, batch).any()
    out, _ = task.dens_forward(batch, corruption)
    per_atom = (out["energy"] - batch.energy) / batch.num_atoms
    torch.testing.assert_close(parts["energy_loss"], (per_atom / task.loss_scale).pow(2).mean())
    forces = ((out["forces"] - batch.forces)[~corruption.mask] / task.loss_scale).pow(2).mean()
    torch.testing.assert_close(parts["forces_loss"], forces)


def test_a_constant_noise_weight_needs_no_length_of_training(tmp_path):
    """With ``decay=none`` DeNS trains with unbounded epochs, ended by a callback (as the wall-clock
    benchmark ends its runs): nothing asks the trainer for its total step count."""
    import lightning

    from dens_lightning.config import load_config
    from dens_lightning.runner import run_finetune

    class StopAfterFourSteps(lightning.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            trainer.should_stop = trainer.global_step >= 4

    overrides = [*TINY_EMBEDDED, *SCHNET_TINY, "data.batch_size=4", "trainer.max_epochs=-1"]
    dens = ["task.scheduler=plateau", "task.dens.enabled=true", "task.dens.decay=none"]
    cfg = load_config("finetune", overrides=[*overrides, *dens, "task.dens.probability=1"])
    run_finetune(cfg, tmp_path / "run", progress=False, callbacks=[StopAfterFourSteps()])
    assert (tmp_path / "run" / "model.safetensors").exists()
