"""Splits, statistics and loaders."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from omegaconf import OmegaConf

from dens_lightning.data.config import DataConfig
from dens_lightning.data.datamodule import AtomsDataModule
from dens_lightning.data.splits import split_sizes
from dens_lightning.data.statistics import energy_scale, reference_energies
from dens_lightning.data.structures import Structures
from dens_lightning.errors import InputError

ATOM_ENERGY = {1: -13.6, 6: -1029.5, 8: -2041.3}


def synthetic(n_frames: int, seed: int = 0, noise: float = 0.0) -> Structures:
    """Molecules of random composition whose energy is exactly the sum of per-element energies."""
    rng = np.random.default_rng(seed)
    numbers, positions, energies, forces = [], [], [], []
    for _ in range(n_frames):
        z = rng.choice([1, 6, 8], size=rng.integers(3, 9))
        numbers.append(z)
        positions.append(rng.normal(0, 1.5, (len(z), 3)))
        energies.append(sum(ATOM_ENERGY[int(x)] for x in z) + rng.normal(0, noise))
        forces.append(rng.normal(0, 0.7, (len(z), 3)))
    return Structures.from_frames(numbers, positions, energies, forces)


def data_cfg(path, **changes):
    cfg = OmegaConf.structured(DataConfig)
    cfg.path = None if path is None else str(path)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


METHANOL = np.array([[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [-0.47, -0.67, -1.17]])


@pytest.fixture
def npz_file(tmp_path):
    """40 frames of one 5-atom molecule in the ase-like npz layout (eV)."""
    rng = np.random.default_rng(1)
    path = tmp_path / "frames.npz"
    np.savez(
        path,
        numbers=np.array([6, 1, 1, 1, 8]),
        positions=METHANOL + rng.normal(0, 0.1, (40, 5, 3)),
        energy=rng.normal(-1100, 0.1, 40),
        forces=rng.normal(0, 1, (40, 5, 3)),
    )
    return path


def test_reference_energies_recover_per_element_energies():
    refs = reference_energies(synthetic(60))
    for z, value in ATOM_ENERGY.items():
        assert refs[z] == pytest.approx(value, abs=1e-6)


def test_energy_scale_is_the_force_rms():
    structures = synthetic(50)
    assert energy_scale(structures, reference_energies(structures)) == pytest.approx(
        float(np.sqrt(np.mean(structures.forces**2)))
    )


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ([0.8, 0.1, 0.1], [80, 10, 10]),
        ([0.5, 0.25], [50, 25]),
        ([60, 20, 0], [60, 20, 0]),
        ([0.333, 0.333, 0.334], [34, 33, 33]),
    ],
)
def test_split_sizes(split, expected):
    assert split_sizes(100, split, "x") == expected


def test_split_sizes_refuse_too_many():
    with pytest.raises(InputError, match="asks for 120"):
        split_sizes(100, [100, 20, 0], "x")


def test_splits_are_seeded_disjoint_saved_and_reused(npz_file, tmp_path):
    run = tmp_path / "run"
    dm = AtomsDataModule(data_cfg(npz_file), cutoff=4.0, seed=3, run_dir=run)
    dm.setup()
    saved = json.loads((run / "splits.json").read_text())
    sets = [set(saved["indices"][k]) for k in ("train", "val", "test")]
    assert [len(s) for s in sets] == [32, 4, 4]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    # same seed, new directory: same split; other seed: another split
    again = AtomsDataModule(data_cfg(npz_file), cutoff=4.0, seed=3, run_dir=tmp_path / "again")
    again.setup()
    other = AtomsDataModule(data_cfg(npz_file), cutoff=4.0, seed=4, run_dir=tmp_path / "other")
    other.setup()
    assert json.loads((tmp_path / "again" / "splits.json").read_text())["indices"] == saved["indices"]
    assert json.loads((tmp_path / "other" / "splits.json").read_text())["indices"] != saved["indices"]
    # a run directory with a split keeps it, even if the seed changes (resume)
    resumed = AtomsDataModule(data_cfg(npz_file), cutoff=4.0, seed=99, run_dir=run)
    resumed.setup()
    np.testing.assert_array_equal(resumed.splits["val"].pos, dm.splits["val"].pos)


def test_explicit_val_and_test_files_give_train_the_whole_file(npz_file, tmp_path):
    dm = AtomsDataModule(
        data_cfg(None, train=str(npz_file), val=str(npz_file), test=str(npz_file)), cutoff=4.0
    )
    dm.setup()
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [40, 40, 40]
    assert set(dm.provenance["files"]) == {"train", "val", "test"}
    assert len(dm.provenance["files"]["train"]["sha256"]) == 64


def test_val_carved_from_train_file(npz_file):
    dm = AtomsDataModule(data_cfg(None, train=str(npz_file), split=[0.9, 0.1]), cutoff=4.0)
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (36, 4)
    assert "test" not in dm.splits


def test_loader_batches_carry_labels_and_the_model_builds_their_neighbours(npz_file):
    """Batches come without a neighbour list; the model (its one owner) builds it within the cutoff."""
    from dens_lightning.models.potential import Potential

    dm = AtomsDataModule(data_cfg(npz_file, batch_size=8), cutoff=3.0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 8 and batch.pos.dtype == torch.float32
    assert batch.energy.shape == (8,) and batch.forces.shape == (40, 3)
    assert batch.edge_index is None
    graph = Potential.build("schnet", {"cutoff": 3.0, "hidden_channels": 8, "num_filters": 8}).prepare(batch)
    assert graph.edge_index is not None and graph.edge_index.shape[1] > 0
    j, i = graph.edge_index
    assert torch.all(graph.batch[j] == graph.batch[i])
    distance = (graph.pos[j] - graph.pos[i] + graph.edge_shift).norm(dim=-1)
    assert float(distance.max()) < 3.0


def test_missing_labels_are_refused_only_when_weighted(tmp_path):
    path = tmp_path / "nolabels.npz"
    carbon_monoxide = [[0.0, 0.0, 0.0], [1.13, 0.0, 0.0]] + np.random.default_rng(0).normal(
        0, 0.05, (10, 2, 3)
    )
    np.savez(path, numbers=np.array([6, 8]), positions=carbon_monoxide)
    with pytest.raises(InputError, match="nolabels.npz: no energies"):
        AtomsDataModule(data_cfg(path), cutoff=4.0).setup()
    AtomsDataModule(data_cfg(path), cutoff=4.0, require_energy=False, require_forces=False).setup()


# ---------------------------------------------------------------- geometry checks


def frames_file(tmp_path, frames: list[np.ndarray], numbers=(6, 1, 1, 1, 8)) -> str:
    path = tmp_path / "geometry.npz"
    n = len(frames)
    np.savez(
        path,
        numbers=np.array(numbers),
        positions=np.stack(frames),
        energy=np.full(n, -1100.0),
        forces=np.zeros((n, len(numbers), 3)),
    )
    return str(path)


def test_atoms_closer_than_min_distance_are_refused_naming_file_frame_and_atom(tmp_path):
    frames = [METHANOL + 0.01 * k for k in range(5)]
    frames[3] = frames[3].copy()
    frames[3][2] = frames[3][0] + [0.2, 0.0, 0.0]  # atom 2 on top of atom 0
    path = frames_file(tmp_path, frames)
    dm = AtomsDataModule(data_cfg(path, split=[3, 1, 1]), cutoff=4.0)
    with pytest.raises(
        InputError, match=rf"{path}: frame 3: atom 0 is 0\.200 Å from another atom.*min_distance=0\.5"
    ):
        dm.setup()
    AtomsDataModule(
        data_cfg(path, split=[3, 1, 1], min_distance=0.1), cutoff=4.0
    ).setup()  # allowed when asked


def test_atoms_without_a_neighbour_within_the_cutoff_are_counted_and_reported(tmp_path):
    frames = [METHANOL.copy() for _ in range(5)]
    for k in (1, 4):
        frames[k][4] = [12.0, 0.0, 0.0]  # the oxygen far away
    dm = AtomsDataModule(data_cfg(frames_file(tmp_path, frames), split=[3, 1, 1]), cutoff=4.0)
    with pytest.warns(
        UserWarning,
        match=r"2 atoms in 2 structures \(first: frame 1\) have no neighbour within the cutoff of 4\.0 Å",
    ):
        dm.setup()
    assert dm.provenance["isolated_atoms"] == 2


def test_nearest_neighbours_match_ase_for_molecules_and_cells():
    """Against ASE's neighbour list: molecules of two sizes and a triclinic periodic cell, where the
    nearest neighbour may be a periodic image."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    from dens_lightning.data.checks import nearest_neighbors

    rng = np.random.default_rng(0)
    frames = [
        Atoms("CH4", positions=rng.uniform(0, 3, (5, 3))),
        Atoms("H2O", positions=rng.uniform(0, 3, (3, 3))),
    ]
    frames.append(Atoms("CH4", positions=rng.uniform(0, 3, (5, 3))))
    silicon = bulk("Si", "diamond", a=5.43)
    silicon.rattle(0.1, seed=2)
    frames.append(silicon)
    structures = Structures.from_frames(
        [a.numbers for a in frames],
        [a.positions for a in frames],
        cells=[a.cell.array for a in frames],
        pbcs=[a.pbc for a in frames],
    )
    got = nearest_neighbors(structures, 4.0).nearest
    expected = []
    for atoms in frames:
        i, d = neighbor_list("id", atoms, 4.0)
        nearest = np.full(len(atoms), np.inf)
        np.minimum.at(nearest, i, d)
        expected.append(nearest)
    np.testing.assert_allclose(got, np.concatenate(expected), rtol=1e-12)


def test_elements_beyond_the_embedding_are_refused_naming_the_file(tmp_path):
    """An element the backbone has no embedding row for (model.max_z) stops the run before training."""
    from dens_lightning.config import load_config
    from dens_lightning.runner import run_finetune

    frames = [METHANOL + 0.01 * k for k in range(8)]
    path = frames_file(tmp_path, frames, numbers=(6, 1, 1, 1, 53))  # iodine where the oxygen was
    config = load_config("finetune", overrides=[f"data.path={path}", "data.split=[6,1,1]", "model.max_z=20"])
    with pytest.raises(
        InputError, match=rf"{path}: atomic number 53 in the train split exceeds model.max_z=20"
    ):
        run_finetune(config, tmp_path / "run", progress=False)
