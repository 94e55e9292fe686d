"""``checkpoint.monitor`` picks the weights a run keeps: the epoch with the lowest validation value it
names, or the latest validation."""

import csv
from pathlib import Path

import pytest

from dens_lightning.artifacts import load_checkpoint
from dens_lightning.cli import main
from dens_lightning.config import load_config
from dens_lightning.run_directory import BEST_CHECKPOINT, RunDirectory
from dens_lightning.training.trainer import _callbacks
from tests.conftest import FAST

RUN = [*FAST, "data.embedded.labeller=mmff", "trainer.max_epochs=6", "task.lr=5e-3"]
RUN += ["checkpoint.every_n_steps=null"]


def validation_column(run_dir: RunDirectory, name: str) -> list[tuple[int, float]]:
    """(step, value) of ``val/<name>`` at every validation, from the run's metrics.csv."""
    with open(run_dir.metrics) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(f"val/{name}")]
    return [(int(row["step"]), float(row[f"val/{name}"])) for row in rows]


@pytest.mark.parametrize("monitor", ["forces_mae_meV_per_A", "energy_mae_meV", "last"])
def test_the_kept_checkpoint_is_the_one_the_monitor_names(tmp_path, monitor):
    run_dir = RunDirectory(tmp_path / monitor)
    assert main(["finetune", "--run-dir", str(run_dir), *RUN, f"checkpoint.monitor={monitor}"]) == 0
    kept = load_checkpoint(run_dir.best_checkpoint)["global_step"]
    if monitor == "last":
        assert kept == load_checkpoint(run_dir.last_checkpoint)["global_step"]
        return
    history = validation_column(run_dir, monitor)
    assert len(history) == 6
    best_step, _ = min(history, key=lambda item: item[1])
    assert kept == best_step + 1  # the CSV logs the step of the last batch; the checkpoint the count after it


@pytest.mark.parametrize(
    ("monitor", "key", "mode"),
    [
        ("loss", "val/loss", "min"),
        ("forces_rmse_meV_per_A", "val/forces_rmse_meV_per_A", "min"),
        ("last", "step", "max"),
    ],
)
def test_the_best_checkpoint_callback_watches_the_monitor(tmp_path, monitor, key, mode):
    cfg = load_config("finetune", overrides=[f"checkpoint.monitor={monitor}"])
    callbacks = _callbacks(cfg, RunDirectory(tmp_path), False)
    best = [c for c in callbacks if getattr(c, "filename", None) == Path(BEST_CHECKPOINT).stem]
    assert len(best) == 1
    assert (best[0].monitor, best[0].mode) == (key, mode)


def test_a_denoising_pretraining_has_no_errors_to_choose_by(tmp_path):
    argv = ["pretrain", "--run-dir", str(tmp_path / "run"), *FAST, "checkpoint.monitor=forces_mae_meV_per_A"]
    assert main(argv) == 2
