import os
from pathlib import Path

import pytest
import torch

# the random molecules, their graphs and the `molecules` and `batch_of` fixtures live in the package
from dens_lightning.testing.molecules import (  # noqa: F401  (fixtures and helpers other tests import)
    batch_of,
    molecule_graph,
    molecules,
    periodic_graph,
    random_molecule,
)

ROOT = Path(__file__).resolve().parent.parent  # the repository
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The embedded data set is generated into a per-session cache, never the user's."""
    os.environ["DENS_LIGHTNING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


TINY_EMBEDDED = [
    "data.embedded.smiles=[CCO,CC(=O)O]",
    "data.embedded.conformers=2",
    "data.embedded.samples=12",
]
TINY_MODEL = [
    "model.name=schnet",
    "model.hidden_channels=16",
    "model.num_filters=16",
    "model.num_interactions=2",
    "model.num_rbf=8",
]

FAST = ["--no-progress", *TINY_EMBEDDED, *TINY_MODEL, "data.batch_size=8", "task.warmup_steps=2"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small SchNet finetuned on the tiny embedded set (ethanol and acetic acid, H C O), labelled by
    MMFF94: labels that are the same on every machine, and a model smooth enough near ethanol's
    minimum for molecular dynamics (with GFN2-xTB labels this model can pull atoms together at 300 K
    on one machine and not on another; after 20 epochs instead of 30, its NVE drift was within the
    test's bound on one machine and 1.4x over it on another)."""
    from dens_lightning.cli import main

    run_dir = tmp_path_factory.mktemp("run") / "finetune"
    argv = [
        "finetune",
        "--run-dir",
        str(run_dir),
        *FAST,
        "trainer.max_epochs=30",
        "task.lr=5e-3",
        "data.batch_size=4",
        "task.scheduler=none",
        "data.embedded.labeller=mmff",
    ]
    assert main(argv) == 0
    return run_dir
