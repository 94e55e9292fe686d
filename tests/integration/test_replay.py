"""Replay during finetuning (``finetune.replay``): energy offsets fitted on the start model, replay
terms trained and recorded, the replayed molecules kept better than without replay (resume:
``test_interruption``; two processes: ``test_distributed``)."""

import pytest
import torch
from omegaconf import OmegaConf

from dens_lightning.artifacts import read_metadata
from dens_lightning.cli import main
from dens_lightning.config import load_config, model_hyperparameters
from dens_lightning.data.readers import ReadOptions, read_structures
from dens_lightning.data.sampling import sample_to_file
from dens_lightning.data.statistics import element_counts
from dens_lightning.errors import InputError
from dens_lightning.evaluation import model_errors, predict_energies
from dens_lightning.replay import attach_replay
from dens_lightning.tasks.finetune import EnergyForceTask
from tests.conftest import TINY_EMBEDDED, TINY_MODEL

COMMON = [
    "--no-progress",
    *TINY_EMBEDDED,
    *TINY_MODEL,
    "data.embedded.labeller=mmff",
    "data.batch_size=8",
    "task.warmup_steps=2",
    "task.lr=2e-3",
]


@pytest.fixture(scope="module")
def replay_file(tmp_path_factory):
    """MMFF94-labelled conformations of two molecules the finetuning data does not hold."""
    path = tmp_path_factory.mktemp("replay") / "other_molecules.extxyz"
    sample_to_file(path, smiles=["CCCO", "c1ccncc1"], num=12, label="mmff", seed=3, workers=1)
    return path


def replay_args(path, weight=1.0):
    return [
        f"finetune.replay.weight={weight}",
        f"finetune.replay.data={path}",
        "finetune.replay.batch_size=4",
    ]


def test_offsets_make_the_start_models_replay_residuals_sum_to_zero_per_element(replay_file):
    cfg = load_config("finetune", None, [*COMMON[1:], *replay_args(replay_file)])
    name, hparams = model_hyperparameters(cfg)
    task = EnergyForceTask(name, hparams, OmegaConf.to_object(cfg.task), OmegaConf.to_object(cfg.finetune))
    task.set_statistics({1: -13.6, 6: -1029.5, 8: -2041.3}, 1.0)  # no N: its offset carries it
    attach_replay(task, cfg, resumed=False)
    structures = read_structures(replay_file, ReadOptions())
    predicted = predict_energies(task.potential, structures)
    counts = element_counts(structures, structures.elements)
    offsets = counts @ task.replay_offsets[structures.elements].double().numpy()
    residual = structures.energy - predicted - offsets
    before = abs(structures.energy - predicted).mean()
    assert abs(counts.T @ residual).max() < 1e-6 * before * counts.sum()  # the least-squares condition
    assert abs(residual).mean() < 0.05 * before


def test_replay_needs_data_when_it_has_weight():
    with pytest.raises(InputError, match="finetune.replay.data"):
        load_config("finetune", None, ["finetune.replay.weight=0.5"])


@pytest.mark.slow
def test_replay_is_trained_recorded_and_keeps_the_replayed_molecules(tmp_path, replay_file):
    plain, replayed = tmp_path / "plain", tmp_path / "replayed"
    assert main(["finetune", "--run-dir", str(plain), *COMMON, "trainer.max_epochs=30"]) == 0
    argv = [
        "finetune",
        "--run-dir",
        str(replayed),
        *COMMON,
        *replay_args(replay_file),
        "trainer.max_epochs=30",
    ]
    assert main(argv) == 0
    header = (replayed / "metrics.csv").read_text().splitlines()[0]
    assert "train/replay_energy_loss_step" in header and "train/replay_forces_loss_step" in header
    assert (
        "replay_offsets"
        in torch.load(replayed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    )
    recorded = read_metadata(replayed / "model.safetensors")["data"]["replay"]
    assert recorded["data"] == str(replay_file) and recorded["weight"] == 1.0
    kept = model_errors(replayed / "model.safetensors", replay_file)["forces_mae_meV_per_A"]
    forgotten = model_errors(plain / "model.safetensors", replay_file)["forces_mae_meV_per_A"]
    assert kept < 0.8 * forgotten
