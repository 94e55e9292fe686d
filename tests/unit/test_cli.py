"""End-to-end: the CLI trains, resumes, tests, and refuses bad input with one clear line."""

import csv
import json
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from dens_lightning import load_model
from dens_lightning.cli import main
from dens_lightning.metrics import METRIC_NAMES
from tests.conftest import FAST


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def column(rows, name):
    return [float(r[name]) for r in rows if r.get(name)]


@pytest.mark.slow
def test_finetune_writes_the_run_directory(trained):
    for name in (
        "config.yaml",
        "metrics.csv",
        "splits.json",
        "model.safetensors",
        "test_metrics.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "README.md",
    ):
        assert (trained / name).exists(), name
    metrics = json.loads((trained / "test_metrics.json").read_text())
    assert set(METRIC_NAMES) <= set(metrics)
    model = load_model(trained)
    assert model.metadata["stage"] == "finetune"
    assert model.metadata["data"]["labeller"] in ("xtb", "mmff")
    assert model.metadata["elements"] == [1, 6, 8]


@pytest.mark.slow
def test_the_model_card_explains_the_model_and_its_code_runs(trained, tmp_path, capsys):
    card = (trained / "README.md").read_text()
    metrics = json.loads((trained / "test_metrics.json").read_text())
    assert card.startswith("# schnet interatomic potential")
    assert "| elements | H, C, O |" in card
    assert f"{metrics['forces_mae_meV_per_A']:.2f}" in card
    assert f"({metrics['n_structures']} structures)" in card
    assert "hidden_channels=16" in card and "labels: " in card
    # the card's Python runs as written
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"atoms": Atoms("OCH3", positions=np.random.default_rng(0).uniform(0, 2.5, (5, 3)))}
    exec(code, namespace)
    assert namespace["out"]["forces"].shape == (5, 3)
    assert namespace["atoms"].get_potential_energy() == pytest.approx(float(namespace["out"]["energy"][0]))
    # a model file copied alone still explains itself
    alone = tmp_path / "model.safetensors"
    alone.write_bytes((trained / "model.safetensors").read_bytes())
    assert main(["info", "--card", str(alone)]) == 0
    assert capsys.readouterr().out.strip() == card.replace(str(trained), str(alone)).strip()


@pytest.mark.slow
def test_short_training_drives_the_loss_down(trained):
    val = column(read_metrics(trained), "val/loss")
    assert len(val) == 30  # one per epoch of the fixture
    assert min(val[-3:]) < 0.75 * val[0]  # an untrained model stays within a few % of val[0]


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["finetune", "--run-dir", str(run_dir), "trainer.max_epochs=2", *FAST]) == 0
    steps_first = max(int(r["step"]) for r in read_metrics(run_dir))
    splits = (run_dir / "splits.json").read_text()
    assert (
        main(["finetune", "--run-dir", str(run_dir), "--resume", "--no-progress", "trainer.max_epochs=4"])
        == 0
    )
    rows = read_metrics(run_dir)
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/loss")})
    assert epochs == [0, 1, 2, 3]  # the resumed run went on at epoch 2 and kept the history
    assert max(int(r["step"]) for r in rows) > steps_first
    assert (run_dir / "splits.json").read_text() == splits


def refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@pytest.mark.slow
def test_a_diverged_model_tests_to_strict_json(trained, tmp_path, capsys):
    """NaN errors print as null: what `test` prints is JSON any reader accepts."""
    from dens_lightning.artifacts import read_metadata, save_model

    model = load_model(trained)
    with torch.no_grad():
        for parameter in model.energy_head.parameters():
            parameter.fill_(float("nan"))
    metadata = read_metadata(trained / "model.safetensors")
    diverged = save_model(model, tmp_path / "diverged.safetensors", metadata)
    atoms = Atoms("CHHHOH", positions=np.arange(18, dtype=float).reshape(6, 3) * 0.4)
    atoms.calc = SinglePointCalculator(atoms, energy=-100.0, forces=np.zeros((6, 3)))
    ase.io.write(tmp_path / "one.extxyz", [atoms])
    capsys.readouterr()
    assert main(["test", "--model", str(diverged), "--data", str(tmp_path / "one.extxyz")]) == 0
    result = json.loads(capsys.readouterr().out, parse_constant=refuse_constant)
    assert result["n_structures"] == 1 and result["energy_mae_meV"] is None


@pytest.mark.slow
def test_test_and_info_commands(trained, tmp_path, capsys):
    atoms = []
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = Atoms("CHHHOH", positions=rng.normal(0, 1.0, (6, 3)) + np.arange(6)[:, None] * 1.1)
        a.calc = SinglePointCalculator(a, energy=-100.0, forces=rng.normal(0, 1, (6, 3)))
        atoms.append(a)
    data = tmp_path / "frames.extxyz"
    ase.io.write(data, atoms)
    capsys.readouterr()
    per_structure = tmp_path / "errors.csv"
    argv = ["test", "--model", str(trained / "model.safetensors"), "--data", str(data)]
    assert main([*argv, "--per-structure", str(per_structure)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_structures"] == 3
    assert set(METRIC_NAMES) <= set(result)
    # the per-structure errors add up to the summary, and each row is its own frame's
    with open(per_structure) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["index"]) for r in rows] == [0, 1, 2] and {r["num_atoms"] for r in rows} == {"6"}
    energy_errors = np.array([float(r["energy_error_meV"]) for r in rows])
    assert np.abs(energy_errors).mean() == pytest.approx(result["energy_mae_meV"], rel=1e-4)
    forces_mae = np.mean([float(r["forces_mae_meV_per_A"]) for r in rows])  # equal sizes: plain mean
    assert forces_mae == pytest.approx(result["forces_mae_meV_per_A"], rel=1e-4)
    forces_rmse = np.sqrt(np.mean([float(r["forces_rmse_meV_per_A"]) ** 2 for r in rows]))
    assert forces_rmse == pytest.approx(result["forces_rmse_meV_per_A"], rel=1e-4)
    model = load_model(trained)
    predicted = model(atoms[1])["energy"].item()
    assert float(rows[1]["predicted_energy_eV"]) == pytest.approx(predicted, abs=1e-4)
    assert float(rows[1]["energy_error_meV"]) == pytest.approx(1e3 * (predicted + 100.0), abs=0.1)
    assert main(["info", str(trained)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"]["name"] == "schnet"
    assert info["backbone"]["hyperparameters"]["hidden_channels"] == 16


def _error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("data.batchsize=3", "data.batchsize"),  # unknown keys
        ("model.hidden=3", "model.hidden"),
        ("trainer.max_epoch=3", "trainer.max_epoch"),
        ("data.batch_size=many", "data.batch_size"),  # wrong type, out of range, unknown value
        ("task.lr=-1", "task.lr"),
        ("model.name=nosuchnet", "nosuchnet"),
    ],
)
def test_config_errors_name_the_key(capsys, tmp_path, override, named):
    assert named in _error_line(capsys, ["finetune", "--run-dir", str(tmp_path / "r"), override])


def test_bad_config_file(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  trian: x.xyz\n")
    line = _error_line(capsys, ["finetune", "--config", str(path)])
    assert "data.trian" in line and str(path) in line
    line = _error_line(capsys, ["finetune", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in line


def test_missing_file_and_unknown_extension(capsys, tmp_path):
    line = _error_line(
        capsys, ["finetune", "--run-dir", str(tmp_path / "r"), f"data.train={tmp_path}/nope.xyz"]
    )
    assert "nope.xyz" in line and "not found" in line
    odd = tmp_path / "frames.pdbx"
    odd.write_text("x")
    line = _error_line(capsys, ["finetune", "--run-dir", str(tmp_path / "r"), f"data.train={odd}"])
    assert "frames.pdbx" in line and "extension" in line


def _write_frames(path, forces=True, nan_frame=None):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(10):
        a = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + rng.normal(0, 0.02, (3, 3)))
        energy = -14.0 + rng.normal(0, 0.01)
        if k == nan_frame:
            energy = float("nan")
        kwargs = {"forces": rng.normal(0, 0.5, (3, 3))} if forces else {}
        a.calc = SinglePointCalculator(a, energy=energy, **kwargs)
        frames.append(a)
    ase.io.write(path, frames)
    return path


def test_file_without_forces_when_forces_are_weighted(capsys, tmp_path):
    data = _write_frames(tmp_path / "noforces.extxyz", forces=False)
    line = _error_line(capsys, ["finetune", "--run-dir", str(tmp_path / "r"), f"data.path={data}"])
    assert "noforces.extxyz" in line and "forces" in line


def test_nan_in_data_names_the_frame(capsys, tmp_path):
    data = _write_frames(tmp_path / "nan.extxyz", nan_frame=4)
    line = _error_line(capsys, ["finetune", "--run-dir", str(tmp_path / "r"), f"data.path={data}"])
    assert "nan.extxyz" in line and "frame 4" in line


def test_resume_without_a_run(capsys, tmp_path):
    line = _error_line(capsys, ["finetune", "--run-dir", str(tmp_path / "empty"), "--resume"])
    assert "empty" in line


def test_real_process_exits_non_zero_with_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dens_lightning",
            "finetune",
            "--run-dir",
            str(tmp_path / "r"),
            "data.nokey=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "data.nokey" in result.stderr


@pytest.mark.slow
def test_finetune_from_a_model_file_alone(trained, tmp_path):
    alone = tmp_path / "shared" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((trained / "model.safetensors").read_bytes())
    run_dir = tmp_path / "ft"
    assert (
        main(["finetune", "--from", str(alone), "--run-dir", str(run_dir), *FAST, "trainer.max_epochs=1"])
        == 0
    )
    model = load_model(run_dir)
    assert model.metadata["data"]["pretrained_from"]["path"] == str(alone)
    assert model.metadata["backbone"]["hyperparameters"]["hidden_channels"] == 16


@pytest.mark.slow
def test_float64_training_on_request(tmp_path):
    run_dir = tmp_path / "f64"
    assert (
        main(
            [
                "finetune",
                "--run-dir",
                str(run_dir),
                *FAST,
                "trainer.max_epochs=1",
                "trainer.precision=64-true",
            ]
        )
        == 0
    )
    model = load_model(run_dir)
    assert next(model.parameters()).dtype == torch.float64
    assert model.metadata["dtype"] == "float64"


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_help_says_that_config_keys_are_set_as_dotted_overrides(command, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main([command, "--help"])
    assert exit_status.value.code == 0
    text = capsys.readouterr().out
    assert "[dotted.key=value ...]" in text.splitlines()[0]
    example = next(line for line in text.splitlines() if line.strip().startswith("python -m dens_lightning"))
    from dens_lightning.config import load_config

    load_config(command, overrides=example.split()[4:])  # the example is a valid set of overrides
