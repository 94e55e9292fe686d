"""experiment transfer: every arm, size and seed runs once on the same validation and test sets, with
nested training sets; an interrupted experiment picks up where it stopped; the report has every arm."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dens_lightning import load_model
from dens_lightning.cli import main
from dens_lightning.data.sampling import sample_to_file
from dens_lightning.errors import InputError
from dens_lightning.evaluation import model_errors, read_structure_errors
from dens_lightning.experiment.spec import TransferConfig, arms, draw_splits, load_experiment
from dens_lightning.experiment.tables import scratch_size_for
from dens_lightning.experiment.transfer import TransferExperiment

TINY = """
name: tiny
model: [model.name=schnet, model.hidden_channels=16, model.num_filters=16, model.num_interactions=2,
        model.num_rbf=8]
pretrain:
  overrides: [trainer.max_epochs=1, data.embedded.limit=3, data.embedded.samples=4,
              data.embedded.conformers=1, data.batch_size=8]
finetune: ["data.embedded.smiles=[CCO,CC(=O)O]", data.embedded.conformers=2, data.embedded.samples=12,
           trainer.max_epochs=2, data.batch_size=4, task.warmup_steps=2]
sizes: [4, 8]
seeds: [0, 1]
validation: 4
test: 8
energy_bins: 2
"""


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv") as handle:
        return list(csv.DictReader(handle))


def test_splits_are_fixed_for_validation_and_test_and_nested_for_training():
    spec = TransferConfig(sizes=[5, 10, 20], seeds=[0, 1], validation=6, test=9)
    fixed, pools = draw_splits(60, spec, explicit_test=False)
    assert len(fixed["val"]) == 6 and len(fixed["test"]) == 9
    assert not set(fixed["val"]) & set(fixed["test"])
    for pool in pools.values():
        assert not set(pool) & (set(fixed["val"]) | set(fixed["test"]))
        assert set(pool[:5]) < set(pool[:10]) < set(pool[:20])  # nested training sets
    assert list(pools[0][:5]) != list(pools[1][:5])  # seeds draw different training sets
    with pytest.raises(InputError, match="need 35, the data has 30"):
        draw_splits(30, spec, explicit_test=False)


def test_dens_on_and_off_doubles_the_arms(tmp_path):
    spec = TransferConfig(sizes=[4], seeds=[0], dens=[False, True])
    assert [arm.name for arm in arms(spec)] == ["scratch", "pretrained", "scratch+dens", "pretrained+dens"]
    runs = list(TransferExperiment(spec, tmp_path).runs())
    assert [run_dir.name for *_, run_dir in runs] == [
        "scratch-n4-seed0",
        "pretrained-n4-seed0",
        "scratch+dens-n4-seed0",
        "pretrained+dens-n4-seed0",
    ]


def test_dens_ablation_and_equal_time_arms():
    """Arms for the DeNS comparison: plain, DeNS, DeNS without force encoding (on the ablation seeds
    only) and plain training for the DeNS run's wall time, from scratch only."""
    spec = TransferConfig(
        sizes=[4],
        seeds=[0, 1],
        dens=["off", "on", "no_encoding"],
        starts=["scratch"],
        equal_time=True,
        ablation_seeds=[1],
    )
    names = [arm.name for arm in arms(spec)]
    assert names == ["scratch", "scratch+dens", "scratch+dens-no-encoding", "scratch@dens-time"]
    ablation = arms(spec)[2]
    assert ablation.overrides == ["task.dens.enabled=True", "task.dens.force_encoding=false"]
    runs = [run_dir.name for *_, run_dir in TransferExperiment(spec, "unused").runs()]
    assert "scratch+dens-no-encoding-n4-seed1" in runs and "scratch+dens-no-encoding-n4-seed0" not in runs
    assert len(runs) == 7


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("dens: [maybe]", "dens"),
        ("starts: [warm]", "starts"),
        ("dens: [true]\nequal_time: true", "equal_time"),
        ("starts: [scratch]\ncompute_matched: true", "compute_matched"),
        ("steps: 0", "steps"),
    ],
)
def test_bad_dens_experiment_keys_are_named(tmp_path, text, named):
    path = tmp_path / "bad.yaml"
    path.write_text(f"sizes: [4]\n{text}\n")
    with pytest.raises(InputError, match=named):
        load_experiment(path)


@pytest.mark.slow
def test_dens_experiment_runs_its_arms_and_reports_ratios(tmp_path):
    """Plain, DeNS, the ablation and the equal-time arm through the command line; the equal-time
    run gets the plain budget scaled by the DeNS run's wall time over the plain run's."""
    config = tmp_path / "dens.yaml"
    text = TINY.replace("seeds: [0, 1]", "seeds: [0]").replace("sizes: [4, 8]", "sizes: [8]")
    config.write_text(
        text + "starts: [scratch]\ndens: [false, true, no_encoding]\nequal_time: true\nsteps: 6\n"
    )
    out = tmp_path / "exp"
    argv = ["experiment", "transfer", "--config", str(config), "--run-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = {r["arm"]: r for r in read_rows(out)}
    assert set(rows) == {"scratch", "scratch+dens", "scratch+dens-no-encoding", "scratch@dens-time"}
    assert not (out / "pretrain").exists()
    walls = {arm: float(rows[arm]["wall_seconds"]) for arm in ("scratch", "scratch+dens")}
    expected = max(1, round(6 * walls["scratch+dens"] / walls["scratch"]))
    assert int(rows["scratch@dens-time"]["steps"]) == expected
    assert int(rows["scratch"]["steps"]) == 6
    summary = (out / "summary.md").read_text()
    assert "| 8 | scratch+dens / scratch | 1 |" in summary
    assert "| 8 | scratch+dens-no-encoding / scratch | 1 |" in summary
    assert "DeNS against plain training" in summary
    assert (out / "training_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compute_matched_arm_gets_the_pretraining_time(tmp_path):
    """The compute-matched scratch run gets the finetune budget plus the steps its scratch twin takes
    in the measured pretraining time; pretrained rows carry the errors before finetuning."""
    config = tmp_path / "matched.yaml"
    text = TINY.replace("seeds: [0, 1]", "seeds: [0]").replace("sizes: [4, 8]", "sizes: [8]")
    config.write_text(text.replace("energy_bins: 2", "compute_matched: true\nsteps: 6"))
    out = tmp_path / "exp"
    argv = ["experiment", "transfer", "--config", str(config), "--run-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = {r["arm"]: r for r in read_rows(out)}
    assert set(rows) == {"scratch", "pretrained", "scratch@pretrain-time"}
    pretraining = float((out / "pretrain" / "wall_seconds.txt").read_text())
    expected = round(6 * (1 + pretraining / float(rows["scratch"]["wall_seconds"])))
    assert int(rows["scratch@pretrain-time"]["steps"]) == expected > 6
    summary = (out / "summary.md").read_text()
    assert "| 8 | pretrained / scratch@pretrain-time (equal compute) |" in summary
    assert "scratch@pretrain-time / scratch" not in summary  # not a DeNS arm
    before = json.loads(Path(rows["pretrained"]["run_dir"], "warm_start.json").read_text())
    before = before["validation_before_finetuning"]["forces_mae_meV_per_A"]
    assert float(rows["pretrained"]["val_forces_mae_meV_per_A_before_finetuning"]) == pytest.approx(before)
    assert rows["scratch"]["val_forces_mae_meV_per_A_before_finetuning"] == ""


def test_bad_experiment_keys_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sizes: [4]\nseedz: [0]\n")
    with pytest.raises(InputError, match="seedz"):
        load_experiment(path)
    path.write_text("sizes: [0, 4]\n")
    with pytest.raises(InputError, match="sizes"):
        load_experiment(path)


@pytest.mark.slow
def test_transfer_experiment_runs_every_arm_and_resumes(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "exp"
    argv = ["experiment", "transfer", "--config", str(config), "--run-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = read_rows(out)
    assert {(r["arm"], r["train_size"], r["seed"]) for r in rows} == {
        (arm, size, seed) for arm in ("scratch", "pretrained") for size in ("4", "8") for seed in ("0", "1")
    }
    assert (out / "learning_curve.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "| 8 | pretrained | 2 |" in summary and "| 4 | scratch | 2 |" in summary
    # the same validation and test structures everywhere; nested training sets per seed
    splits = {r["run_dir"]: json.loads(Path(r["run_dir"], "splits.json").read_text()) for r in rows}
    splits = {run: saved["indices"] for run, saved in splits.items()}
    assert len({json.dumps(s["test"]) for s in splits.values()}) == 1
    assert len({json.dumps(s["val"]) for s in splits.values()}) == 1
    # each run's test errors in 2 equal-count energy bins, which add up to its overall test errors
    with open(out / "energy_bins.csv") as handle:
        bins = list(csv.DictReader(handle))
    assert len(bins) == 2 * len(rows)
    for row in rows:
        mine = [
            b
            for b in bins
            if (b["arm"], b["train_size"], b["seed"]) == (row["arm"], row["train_size"], row["seed"])
        ]
        counts = [int(b["n_structures"]) for b in mine]
        assert counts == [4, 4]
        assert float(mine[0]["energy_above_lowest_from_eV"]) == 0.0
        pooled = math.sqrt(sum(n * float(b["energy_rmse_meV"]) ** 2 for n, b in zip(counts, mine)) / 8)
        assert pooled == pytest.approx(float(row["energy_rmse_meV"]), rel=1e-3)
        per_structure = read_structure_errors(Path(row["run_dir"]) / "test_structures.csv")
        # the lower bin holds the 4 structures of lowest reference energy, the upper one the others
        above = per_structure["energy_eV"] - per_structure["energy_eV"].min()
        assert float(mine[1]["energy_above_lowest_to_eV"]) == pytest.approx(above.max())
        lowest = np.argsort(above)[:4]
        lower_rmse = np.sqrt(np.mean(per_structure["energy_error_meV"][lowest] ** 2))
        assert float(mine[0]["energy_rmse_meV"]) == pytest.approx(lower_rmse, rel=1e-9)
        test_indices = json.loads(Path(row["run_dir"], "splits.json").read_text())["indices"]["test"]
        assert per_structure["index"].astype(int).tolist() == test_indices  # indices into the data file
        weights = 3 * per_structure["num_atoms"]
        forces_rmse = np.sqrt(np.sum(weights * per_structure["forces_rmse_meV_per_A"] ** 2) / weights.sum())
        assert forces_rmse == pytest.approx(float(row["forces_rmse_meV_per_A"]), rel=1e-3)
    assert "## Test RMSE by energy above the lowest test structure" in summary
    assert (out / "error_by_energy.png").stat().st_size > 10_000
    small, large = (splits[str(out / "runs" / f"scratch-n{n}-seed0")]["train"] for n in (4, 8))
    assert set(small) < set(large)
    assert (
        splits[str(out / "runs" / "pretrained-n8-seed1")]["train"]
        == splits[str(out / "runs" / "scratch-n8-seed1")]["train"]
    )  # arms see the same data
    # the pretrained arm starts from the experiment's pretraining
    origin = load_model(out / "runs" / "pretrained-n4-seed0").metadata["data"]["pretrained_from"]
    assert origin["path"] == str(out / "pretrain" / "model.safetensors") and origin["tensors_loaded"] > 0
    assert "pretrained_from" not in load_model(out / "runs" / "scratch-n4-seed0").metadata["data"]
    # interrupted: one run lost its results; rerunning trains that run only
    lost = out / "runs" / "scratch-n8-seed1"
    (lost / "model.safetensors").unlink()
    (lost / "test_metrics.json").unlink()
    kept = out / "runs" / "pretrained-n4-seed0" / "model.safetensors"
    before = kept.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert (lost / "model.safetensors").exists() and kept.stat().st_mtime_ns == before
    assert len(read_rows(out)) == 8
    # other molecules, given afterwards: every finished model and the pretrained start are tested on
    # them, and nothing is trained again
    other = tmp_path / "other.extxyz"
    sample_to_file(other, smiles=["CCCO", "c1ccncc1"], num=4, label="mmff", seed=3, workers=1)
    assert main([*argv, f"other={other}"]) == 0
    assert kept.stat().st_mtime_ns == before
    rows = {(r["arm"], r["train_size"], r["seed"]): r for r in read_rows(out)}
    row = rows[("pretrained", "4", "0")]
    alone = model_errors(row["run_dir"], other)["forces_mae_meV_per_A"]
    assert float(row["other_forces_mae_meV_per_A"]) == pytest.approx(alone, rel=1e-9)
    summary = (out / "summary.md").read_text()
    assert f"Force MAE on other molecules: `{other}`" in summary
    assert "the pretrained start" not in summary  # denoising-pretrained: no forces of its own
    assert all(r["other_forces_mae_meV_per_A"] for r in rows.values())


def test_scratch_size_for_inverts_a_power_law_learning_curve():
    curve = {n: 1000.0 * n**-0.5 for n in (50, 100, 200)}  # error ~ size^-1/2, a straight line in log-log
    for size in (50, 70, 141, 200):
        assert scratch_size_for(1000.0 * size**-0.5, curve) == f"{size}"
    assert scratch_size_for(10.0, curve) == "> 200"  # below what scratch reached: more than measured
    assert scratch_size_for(500.0, curve) == "< 50"


def test_without_matplotlib_the_experiment_refuses_before_any_run(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    assert main(["experiment", "transfer", "--config", str(config), "--run-dir", str(tmp_path / "out")]) == 2
    assert "dens_lightning[experiment]" in capsys.readouterr().err
    assert not (tmp_path / "out" / "runs").exists()
