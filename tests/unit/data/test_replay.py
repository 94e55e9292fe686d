"""Replay batches drawn by step: the same on resume, the same for W ranks of B as for one of W·B,
every structure once per pass; replay data without labels refused."""

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from omegaconf import OmegaConf

from dens_lightning.data.replay import ReplayBatches, replay_structures
from dens_lightning.errors import InputError
from tests.unit.data.test_datamodule import synthetic


def test_ranks_of_batch_b_draw_what_one_process_of_the_whole_batch_draws():
    replay = ReplayBatches(synthetic(37), batch_size=3, seed=5)
    for step in (0, 1, 6, 25):
        one = ReplayBatches(synthetic(37), batch_size=6, seed=5).indices(step)
        together = np.concatenate([replay.indices(step, rank, 2) for rank in range(2)])
        np.testing.assert_array_equal(together, one)


def test_each_pass_takes_every_structure_once_and_the_passes_differ():
    replay = ReplayBatches(synthetic(12), batch_size=4, seed=0)
    walk = np.concatenate([replay.indices(step) for step in range(6)])  # two passes over 12
    assert sorted(walk[:12]) == sorted(walk[12:]) == list(range(12))
    assert not np.array_equal(walk[:12], walk[12:])


def test_draws_depend_on_step_and_seed_only():
    a, b = ReplayBatches(synthetic(50), 8, seed=1), ReplayBatches(synthetic(50), 8, seed=1)
    late = a.indices(40)  # drawn first by one, after others by the other (a resumed run)
    for step in range(41):
        b.indices(step)
    np.testing.assert_array_equal(late, b.indices(40))
    assert not np.array_equal(a.indices(3), ReplayBatches(synthetic(50), 8, seed=2).indices(3))


def test_a_batch_holds_the_drawn_structures():
    structures = synthetic(20)
    replay = ReplayBatches(structures, batch_size=5, seed=3)
    batch = replay.batch(2, dtype=torch.float64)
    expected = replay.indices(2)
    assert batch.num_graphs == 5
    torch.testing.assert_close(batch.energy, torch.as_tensor(structures.energy[expected]))


def test_replay_data_without_forces_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "energies_only.extxyz"
    frames = []
    for k in range(3):
        atoms = Atoms("CO", positions=[[0, 0, 0], [1.2 + 0.01 * k, 0, 0]])
        atoms.info["energy"] = -10.0 - k
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    cfg = OmegaConf.create({"data": str(path), "labeller": "xtb"})
    with pytest.raises(InputError, match=f"{path}: finetune.replay.data has no forces"):
        replay_structures(cfg)
