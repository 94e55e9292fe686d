"""Config loading: packaged defaults, files, overrides, and errors that name the key."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dens_lightning.config import CONFIG_DIR, RunConfig, load_config, model_hyperparameters
from dens_lightning.errors import InputError
from tests.conftest import ROOT

REPO_CONFIGS = ROOT / "configs"


def leaf_keys(node, prefix=""):
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict) and value and key not in ("keys", "trainer", "model"):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


# Keys that only one stage reads, and which its packaged default therefore leaves out.
OTHER_STAGE_KEYS = {
    "finetune": {
        "task.noise.sigma",
        "task.noise.sigma_max",
        "task.noise.atom_fraction",
        "task.noise.head_blocks",
        "task.objective",
    }
    | {
        f"data.qm9.{k}"
        for k in ("molecules", "samples", "method", "temperature", "displacement", "labeller", "seed")
    },
    "pretrain": {
        f"finetune.{k}"
        for k in ("freeze_backbone", "backbone_lr_scale", "energy_head", "head_init", "freeze")
    }
    | {f"finetune.replay.{k}" for k in ("weight", "data", "labeller", "batch_size")},
}


@pytest.mark.parametrize("stage", sorted(OTHER_STAGE_KEYS))
def test_packaged_default_shows_every_key(stage):
    schema = OmegaConf.to_container(OmegaConf.structured(RunConfig))
    default = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{stage}.yaml"))
    missing = leaf_keys(schema) - leaf_keys(default) - {"stage"} - OTHER_STAGE_KEYS[stage]
    assert not missing


@pytest.mark.parametrize(
    "path",
    sorted(p for p in REPO_CONFIGS.glob("*/*.yaml") if p.parent.name != "experiment"),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_shipped_config_file_loads(path):
    stage = "pretrain" if path.parent.name == "zoo" else "finetune"  # zoo recipes pretrain
    cfg = load_config(stage, str(path))
    assert cfg.stage == stage


@pytest.mark.parametrize("path", sorted(REPO_CONFIGS.glob("experiment/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_config_loads_and_its_overrides_are_valid(path):
    from dens_lightning.experiment.spec import load_experiment

    spec = load_experiment(path)
    assert spec.sizes and spec.seeds
    load_config("pretrain", overrides=[*spec.model, *spec.pretrain.overrides])
    load_config("finetune", overrides=[*spec.model, *spec.finetune])


def test_overrides_win_over_file_over_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: 7\ntask:\n  lr: 0.01\n")
    cfg = load_config("finetune", str(path), ["task.lr=0.02", "model.hidden_channels=12"])
    assert (cfg.data.batch_size, cfg.task.lr) == (7, 0.02)
    name, hparams = model_hyperparameters(cfg)
    assert name == "schnet" and hparams["hidden_channels"] == 12 and hparams["num_rbf"] == 20


def test_pretrain_default_is_painn_and_another_backbone_takes_its_own_defaults(tmp_path):
    name, hparams = model_hyperparameters(load_config("pretrain"))
    assert (name, hparams["hidden_channels"], hparams["num_interactions"]) == ("painn", 64, 3)
    name, hparams = model_hyperparameters(load_config("pretrain", overrides=["model.hidden_channels=32"]))
    assert (name, hparams["hidden_channels"]) == ("painn", 32)
    # SchNet gets its own width, not PaiNN's 64; equiformer has no hidden_channels key at all
    name, hparams = model_hyperparameters(load_config("pretrain", overrides=["model.name=schnet"]))
    assert (name, hparams["hidden_channels"], hparams["num_filters"]) == ("schnet", 128, 128)
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  name: equiformer\n  cutoff: 4.0\n")
    name, hparams = model_hyperparameters(load_config("pretrain", str(path)))
    assert (name, hparams["cutoff"]) == ("equiformer", 4.0)
    with pytest.raises(InputError, match="hidden_channels"):
        overrides = ["model.name=equiformer", "model.hidden_channels=8"]
        model_hyperparameters(load_config("pretrain", overrides=overrides))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("task.lrr=1", "task.lrr"),
        ("seed=abc", "seed"),
        ("data.split=[0.5]", "data.split"),
        ("task.scheduler=linear", "task.scheduler"),
        ("model.num_interactions=two", "model.num_interactions"),
        ("trainer.nonsense=1", "trainer.nonsense"),
        ("task.energy_weight=0", "task.energy_weight"),
        ("novalue", "novalue"),
        ("checkpoint.every_n_steps=0", "checkpoint.every_n_steps"),
        ("checkpoint.every_n_steps=often", "checkpoint.every_n_steps"),
        ("task.nonfinite_loss=ignore", "task.nonfinite_loss"),
        ("data.min_distance=-1", "data.min_distance"),
        ("task.dens.probability=1.5", "task.dens.probability"),
        ("task.loss.forces=cubed", "task.loss.forces"),
        ("task.loss.energi=norm", "task.loss.energi"),
        ("task.dens.head_blocks=-1", "task.dens.head_blocks"),
        ("finetune.head_init=ones", "finetune.head_init"),
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 without trainer.max_steps"),
    ],
)
def test_errors_name_the_key(override, named):
    overrides = [override, "task.forces_weight=0"] if "energy_weight" in override else [override]
    with pytest.raises(InputError) as err:
        load_config("finetune", None, overrides)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


def test_embedded_smiles_and_smiles_file_together_are_refused(capsys, tmp_path):
    from dens_lightning.cli import main

    argv = ["pretrain", "--run-dir", str(tmp_path / "r"), "data.embedded.smiles=[CCO]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "data.embedded.smiles_file='bundled'" in err and "smiles_file=null" in err
    assert main(["finetune", "--run-dir", str(tmp_path / "r"), "data.embedded.smiles=[]"]) == 2
    assert "data.embedded.smiles is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path",
    sorted(p for p in REPO_CONFIGS.glob("experiment/*.yaml") if "../shared/data" in p.read_text()),
    ids=lambda p: p.name,
)
def test_experiment_configs_on_the_shared_data_fit_their_files(path):
    from dens_lightning.experiment.spec import draw_splits, load_experiment
    from dens_lightning.experiment.transfer import TransferExperiment

    spec = load_experiment(path)
    experiment = TransferExperiment(spec, "unused")
    finetune = load_config("finetune", overrides=[*spec.model, *spec.finetune])
    needed = [p for p in (finetune.data.path, finetune.data.test) if p]
    if not all(Path(p).exists() for p in needed):
        pytest.skip("../shared/data is not on this machine")
    data, total, test_file = experiment.data_file()
    draw_splits(total, spec, bool(test_file))  # raises when the sizes do not fit the data
    if test_file:
        assert spec.test == 0 and len(experiment.read(test_file)) > 0


def test_unbounded_training_is_allowed_with_a_schedule_that_needs_no_length():
    load_config("finetune", None, ["trainer.max_epochs=-1", "task.scheduler=plateau"])
    load_config("finetune", None, ["trainer.max_epochs=-1", "trainer.max_steps=100"])
