"""The run directory's names and its start/resume checks, and resuming a run's own config."""

import pytest

from dens_lightning.errors import InputError
from dens_lightning.run_directory import RunDirectory
from dens_lightning.runner import training_config


def test_files_are_named_once_under_the_run_directory(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.config == tmp_path / "run" / "config.yaml"
    assert run.last_checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert run.best_checkpoint.parent == run.checkpoints
    assert run.model.name == "model.safetensors"
    assert str(run) == str(tmp_path / "run")
    assert RunDirectory(run).path == run.path  # a RunDirectory is a path-like


def test_a_new_run_needs_an_unused_directory_and_a_resumed_one_a_checkpoint(tmp_path):
    run = RunDirectory(tmp_path / "run")
    assert run.start(resume=False) is None
    with pytest.raises(InputError, match="nothing to resume"):
        run.start(resume=True)
    run.checkpoints.mkdir(parents=True)
    run.last_checkpoint.write_bytes(b"")
    assert run.start(resume=True) == run.last_checkpoint
    with pytest.raises(InputError, match="already holds a run; pass --resume"):
        run.start(resume=False)


def test_a_resumed_run_reads_its_own_config_and_takes_overrides(tmp_path):
    run = RunDirectory(tmp_path / "run")
    with pytest.raises(InputError, match="config.yaml: not found"):
        training_config("finetune", run_dir=run.path, resume=True)
    run.path.mkdir()
    run.write_config("seed: 5\ndata:\n  batch_size: 7\n")
    cfg = training_config("finetune", overrides=["data.batch_size=3"], run_dir=run.path, resume=True)
    assert (cfg.seed, cfg.data.batch_size) == (5, 3)
    with pytest.raises(InputError, match="drop --config"):
        training_config("finetune", config_files=["x.yaml"], run_dir=run.path, resume=True)
    with pytest.raises(InputError, match="--resume needs --run-dir"):
        training_config("finetune", resume=True)


def test_a_run_saved_before_a_task_key_existed_resumes_with_what_it_trained_with(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    run.write_config("task:\n  lr: 0.001\n  dens:\n    enabled: true\n")  # before loss forms
    cfg = training_config("finetune", run_dir=run.path, resume=True)
    assert (cfg.task.loss.energy, cfg.task.loss.forces, cfg.task.loss.noise) == ("squared",) * 3
    assert cfg.task.dens.forces_on_corrupted is True
    cfg = training_config("finetune", overrides=["task.loss.forces=norm"], run_dir=run.path, resume=True)
    assert cfg.task.loss.forces == "norm"  # an override still wins
    today = training_config("finetune")
    run.write_config(f"task:\n  loss:\n    energy: norm\n  dens:\n    forces_on_corrupted: {False}\n")
    cfg = training_config("finetune", run_dir=run.path, resume=True)
    assert cfg.task.loss == today.task.loss and cfg.task.dens.forces_on_corrupted is False


def test_a_task_section_saved_before_a_key_existed_gets_the_value_it_trained_with():
    """Model files and checkpoints carry their task section: the same legacy values as a resume."""
    from dens_lightning.tasks.config import task_config

    old = task_config({"lr": 1e-3, "dens": {"enabled": True}})
    assert (old.loss.energy, old.loss.forces, old.loss.noise) == ("squared",) * 3
    assert old.dens.forces_on_corrupted is True and old.dens.enabled is True and old.lr == 1e-3
    today = task_config({"loss": {"energy": "norm"}, "dens": {"forces_on_corrupted": False}})
    assert today.loss.energy == "norm" and today.dens.forces_on_corrupted is False
