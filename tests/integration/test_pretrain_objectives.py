"""Pretraining objectives (task.objective): supervised and DeNS pretraining on labelled conformations,
their refusal on unlabelled data, and the handoff of the energy head to finetuning."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from safetensors.torch import load_file

from dens_lightning import load_model
from dens_lightning.artifacts import read_metadata
from dens_lightning.cli import main
from dens_lightning.config import load_config
from dens_lightning.data.structures import Structures
from dens_lightning.errors import InputError
from dens_lightning.evaluation import predict_energies
from dens_lightning.models.potential import Potential
from dens_lightning.warm_start import Pretrained, load_energy_head, read_warm_start
from tests.integration.test_pretrain import FINETUNE_FAST, SMALL, TINY_PRETRAIN, val_column

LABELLED = [*TINY_PRETRAIN, "data.embedded.labeller=mmff", "trainer.max_epochs=3", "task.lr=2e-3"]


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sup") / "pretrain"
    assert main(["pretrain", "--run-dir", str(run_dir), *LABELLED, "task.objective=supervised"]) == 0
    return run_dir


@pytest.mark.slow
def test_supervised_pretraining_writes_a_potential(supervised):
    metadata = read_metadata(supervised / "model.safetensors")
    assert metadata["stage"] == "pretrain" and metadata["objective"] == "supervised"
    assert metadata["data"]["labeller"] == "mmff"
    forces = val_column(supervised, "val/forces_mae_meV_per_A")
    assert len(forces) == 3 and forces[-1] < forces[0]
    assert metadata["validation"]["forces_mae_meV_per_A"] > 0 and metadata["energy_references_eV"]
    tensors = load_file(str(supervised / "model.safetensors"))
    assert any(k.startswith("energy_head.") for k in tensors)
    model = load_model(supervised)  # a whole potential: usable as one
    assert set(model(molecule("CH3CH2OH"))) >= {"energy", "forces"}
    card = (supervised / "README.md").read_text()
    assert "pretrained interatomic potential" in card and "objective | supervised" in card


@pytest.mark.slow
def test_finetune_from_supervised_keeps_the_energy_head(supervised, tmp_path, capsys):
    run_dir = tmp_path / "ft"
    argv = ["finetune", "--from", str(supervised), "--run-dir", str(run_dir), *FINETUNE_FAST]
    assert main([*argv, "trainer.max_epochs=1", "task.ema_decay=null", "task.lr=1e-6"]) == 0
    assert "backbone tensors from" in (out := capsys.readouterr().out) and "its energy head kept" in out
    origin = read_warm_start(run_dir)
    assert origin["energy_head_loaded"] and origin["objective"] == "supervised"
    pre, tuned = (
        load_file(str(supervised / "model.safetensors")),
        load_file(str(run_dir / "model.safetensors")),
    )
    name = "energy_head.mlp.0.weight"
    assert (tuned[name] - pre[name]).abs().max() < 1e-3  # kept, and barely moved at lr 1e-6
    assert "its energy head kept" in (run_dir / "README.md").read_text()

    fresh_dir = tmp_path / "fresh"
    argv = ["finetune", "--from", str(supervised), "--run-dir", str(fresh_dir), *FINETUNE_FAST]
    assert main([*argv, "trainer.max_epochs=1", "finetune.energy_head=fresh"]) == 0
    assert "heads start fresh" in capsys.readouterr().out
    assert not read_warm_start(fresh_dir)["energy_head_loaded"]
    fresh = load_file(str(fresh_dir / "model.safetensors"))
    assert (fresh[name] - pre[name]).abs().max() > 1e-2


@pytest.mark.slow
def test_dens_pretraining_hands_its_force_encoder_on(tmp_path, capsys):
    run_dir = tmp_path / "pre"
    argv = ["pretrain", "--run-dir", str(run_dir), *LABELLED, "task.objective=dens", "model.name=painn"]
    argv = [a for a in argv if not a.startswith(("model.num_filters", "model.num_rbf"))]
    assert main([*argv, "task.dens.probability=0.5", "trainer.max_epochs=1"]) == 0
    metadata = read_metadata(run_dir / "model.safetensors")
    assert metadata["objective"] == "dens" and metadata["data"]["dens"]["probability"] == 0.5
    assert any(k.startswith("force_encoder.") for k in load_file(str(run_dir / "model.safetensors")))
    assert val_column(run_dir, "train/noise_loss_epoch")  # the DeNS term trained
    load_model(run_dir)  # the encoder's tensors do not stop it loading as a potential
    tuned = tmp_path / "ft"
    argv = ["finetune", "--from", str(run_dir), "--run-dir", str(tuned), *FINETUNE_FAST]
    assert main([*argv, "task.dens.enabled=true", "trainer.max_epochs=1"]) == 0
    origin = read_warm_start(tuned)
    assert origin["force_encoder_loaded"] and origin["energy_head_loaded"]


@pytest.mark.slow
def test_a_labelled_objective_on_an_unlabelled_file_is_one_line(tmp_path, capsys):
    from ase.io import write

    frames = []
    for k in range(12):
        atoms = molecule("CH3CH2OH")
        atoms.positions += np.random.default_rng(k).normal(0, 0.02, atoms.positions.shape)
        frames.append(atoms)
    path = tmp_path / "unlabelled.xyz"
    write(path, frames)
    argv = ["pretrain", "--run-dir", str(tmp_path / "r"), "--no-progress", f"data.path={path}"]
    assert main([*argv, "task.objective=supervised"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err and "no energies" in err and "task.objective=denoise" in err


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.objective=supervised"], "data.embedded.labeller is 'none'"),
        (["task.objective=supervised", "task.dens.enabled=true"], "set task.objective=dens"),
        (["task.objective=regress"], "expected one of denoise, supervised, dens"),
        (["task.objective=dens", "data.source=qm9"], "label it with data.qm9.labeller=xtb"),
        (["data.qm9.method=perturb", "data.qm9.labeller=mmff"], "labels need data.qm9.method=normal-mode"),
    ],
)
def test_objective_errors_name_the_key(overrides, message):
    with pytest.raises(InputError, match=message):
        load_config("pretrain", overrides=overrides)


def test_finetune_has_no_objective():
    with pytest.raises(InputError, match="task.objective='dens' applies to pretrain"):
        load_config("finetune", overrides=["task.objective=dens"])
    assert load_config(
        "pretrain", overrides=["task.objective=dens", "data.embedded.labeller=mmff"]
    ).task.dens.enabled
    labelled_qm9 = ["task.objective=supervised", "data.source=qm9", "data.qm9.labeller=mmff"]
    assert load_config("pretrain", overrides=labelled_qm9).data.qm9.labeller == "mmff"


class _Data:
    """What load_energy_head reads of a datamodule."""

    def __init__(self, structures):
        self.structures, self.references, self.eval_batch_size = structures, {}, 4

    def statistics_set(self):
        return self.structures


def test_kept_energy_head_refits_references_on_its_residuals():
    """Energies built as the model's own prediction plus known per-element references: the refit
    recovers those references, and the kept head then predicts every energy exactly."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    source = Potential.build("schnet", dict(SMALL)).double()
    source.energy_head.set_statistics({1: -5.0, 6: -40.0, 8: -70.0}, 0.7)
    with torch.no_grad():
        source.energy_head.scale[6] = 1.3  # a learned per-element scale travels with the head
    sizes = [6, 9, 7, 8, 5, 9]
    z = np.concatenate([rng.choice([1, 6, 8], size=n) for n in sizes])
    pos = np.concatenate([rng.uniform(0, 3, (n, 3)) for n in sizes])
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    count = len(sizes)
    unlabelled = Structures(
        z=z, pos=pos, ptr=ptr, cell=np.zeros((count, 3, 3)), pbc=np.zeros((count, 3), bool)
    )
    source.energy_head.set_references({})
    interaction = predict_energies(source, unlabelled)
    truth = {1: -13.6, 6: -1030.0, 8: -2040.0}
    per_structure = np.array([sum(truth[int(a)] for a in z[ptr[k] : ptr[k + 1]]) for k in range(count)])
    structures = Structures(
        z=z, pos=pos, ptr=ptr, cell=unlabelled.cell, pbc=unlabelled.pbc, energy=interaction + per_structure
    )
    head = {k: v.clone() for k, v in source.energy_head.state_dict().items()}
    pretrained = Pretrained("schnet", dict(SMALL), {}, {}, source="src", head_state=head)
    target = Potential.build("schnet", dict(SMALL)).double()
    target.backbone.load_state_dict(source.backbone.state_dict())
    references = load_energy_head(target, pretrained, _Data(structures))
    for element, value in truth.items():
        assert references[element] == pytest.approx(value, abs=1e-6)
    assert target.energy_head.scale[6].item() == pytest.approx(1.3)
    np.testing.assert_allclose(predict_energies(target, structures), structures.energy, atol=1e-6)
