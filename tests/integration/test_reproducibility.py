"""The same seed and config give the same run on the same machine: every logged number and every
weight; another seed gives another run."""

import csv

import pytest
from safetensors.torch import load_file

from dens_lightning.cli import main
from tests.conftest import FAST

RUN = [*FAST, "trainer.max_epochs=2", "trainer.log_every_n_steps=1", "trainer.accelerator=cpu"]


def logged(run_dir) -> list[dict]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def weights(run_dir) -> dict:
    return load_file(run_dir / "model.safetensors")


@pytest.mark.parametrize(
    "stage, extra",
    [
        ("finetune", ["task.dens.enabled=true", "task.dens.probability=0.5"]),  # DeNS draws and EMA
        ("pretrain", ["data.embedded.smiles_file=null", "task.noise.sigma_max=0.3"]),
    ],
)
def test_same_seed_same_run_other_seed_other_run(tmp_path, stage, extra):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runs[name] = tmp_path / name
        assert main([stage, "--run-dir", str(runs[name]), *RUN, *extra, f"seed={seed}"]) == 0
    assert logged(runs["a"]) == logged(runs["b"]) and len(logged(runs["a"])) > 4
    a, b, c = (weights(runs[k]) for k in "abc")
    assert all(a[k].equal(b[k]) for k in a)
    assert any(not a[k].equal(c[k]) for k in a)
    assert logged(runs["a"]) != logged(runs["c"])
