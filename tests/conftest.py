import os

import numpy as np
import pytest
import torch

from dens_lightning.data.graph import Graph, collate

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The embedded data set is generated into a per-session cache, never the user's."""
    os.environ["DENS_LIGHTNING_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield


def random_molecule(
    n_atoms: int, rng: np.random.Generator, min_distance: float = 0.9, box: float | None = None
):
    """Atomic numbers and positions (Å) of a random compact molecule with no pair closer than min_distance."""
    box = box or 1.3 * n_atoms ** (1 / 3) + 1.0
    positions = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, box, 3)
        if all(np.linalg.norm(trial - p) >= min_distance for p in positions):
            positions.append(trial)
    z = rng.choice([1, 6, 7, 8], size=n_atoms)
    return z, np.array(positions)


def molecule_graph(z, pos, dtype=torch.float64, energy=None, forces=None) -> Graph:
    n = len(z)
    return Graph(
        z=torch.as_tensor(z, dtype=torch.long),
        pos=torch.as_tensor(pos, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.long),
        ptr=torch.tensor([0, n]),
        cell=torch.zeros(1, 3, 3, dtype=dtype),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        energy=None if energy is None else torch.tensor([energy], dtype=dtype),
        forces=None if forces is None else torch.as_tensor(forces, dtype=dtype),
    )


def periodic_graph(atoms, dtype=torch.float64) -> Graph:
    n = len(atoms)
    return Graph(
        z=torch.as_tensor(atoms.numbers, dtype=torch.long),
        pos=torch.as_tensor(atoms.positions, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.long),
        ptr=torch.tensor([0, n]),
        cell=torch.as_tensor(atoms.cell.array, dtype=dtype)[None],
        pbc=torch.as_tensor(atoms.pbc)[None],
    )


@pytest.fixture
def molecules():
    rng = np.random.default_rng(0)
    return [random_molecule(n, rng) for n in (5, 9, 13)]


@pytest.fixture
def batch_of(molecules):
    def make(dtype=torch.float64):
        return collate([molecule_graph(z, p, dtype) for z, p in molecules])

    return make


TINY_EMBEDDED = [
    "data.embedded.smiles=[CCO,CC(=O)O]",
    "data.embedded.conformers=2",
    "data.embedded.samples=12",
]
TINY_MODEL = [
    "model.hidden_channels=16",
    "model.num_filters=16",
    "model.num_interactions=2",
    "model.num_rbf=8",
]

FAST = ["--no-progress", *TINY_EMBEDDED, *TINY_MODEL, "data.batch_size=8", "task.warmup_steps=2"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A small SchNet finetuned on the tiny embedded set (ethanol and acetic acid, H C O)."""
    from dens_lightning.cli import main

    run_dir = tmp_path_factory.mktemp("run") / "finetune"
    argv = [
        "finetune",
        "--run-dir",
        str(run_dir),
        *FAST,
        "trainer.max_epochs=20",
        "task.lr=5e-3",
        "data.batch_size=4",
        "task.scheduler=none",
    ]
    assert main(argv) == 0
    return run_dir
