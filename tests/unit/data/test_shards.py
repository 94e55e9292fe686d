"""Sampling and labelling in shards: worker processes give what one process gives, a killed run
continues from its finished shards, and failed labels are dropped and counted."""

import numpy as np
import pytest

from dens_lightning.data import shards
from dens_lightning.data.sampling import Sampler, read_molecules
from dens_lightning.data.shards import sample_sharded
from dens_lightning.errors import InputError

SMILES = ["CCO", "CC#N", "C=O", "CC(=O)O", "OCCO"]


def sampler(**kwargs):
    return Sampler(method="normal-mode", temperature=400.0, samples=3, labeller="mmff", seed=5, **kwargs)


def assert_same(samples, expected):
    assert len(samples) == len(expected)
    for mine, theirs in zip(samples, expected):
        assert mine.smiles == theirs.smiles and mine.conformer == theirs.conformer
        np.testing.assert_array_equal(mine.numbers, theirs.numbers)
        np.testing.assert_allclose(mine.positions, theirs.positions, rtol=0, atol=0)
        assert mine.energy == theirs.energy
        np.testing.assert_allclose(mine.forces, theirs.forces, rtol=0, atol=0)


@pytest.mark.slow
def test_worker_processes_give_what_one_process_gives(tmp_path):
    molecules = read_molecules(SMILES)
    expected = list(sampler().sample(molecules))
    result = sample_sharded(molecules, sampler(), tmp_path / "work", workers=2, shard_size=2)
    assert_same(result.samples, expected)
    assert result.report.kept == len(expected) == 15 and result.report.unlabelled == 0


def test_a_killed_run_continues_from_its_finished_shards(tmp_path, monkeypatch):
    molecules = read_molecules(SMILES)
    expected = list(sampler().sample(molecules))
    work = tmp_path / "work"
    original, calls = shards._sample_shard, []

    def killed_after_two(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped while the third shard is sampled
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(shards, "_sample_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        sample_sharded(molecules, sampler(), work, shard_size=2)
    finished = sorted(work.glob("shard-*.npz"))
    assert [p.name for p in finished] == ["shard-000000.npz", "shard-000001.npz"]
    stamps = [p.stat().st_mtime_ns for p in finished]
    calls.clear()
    monkeypatch.setattr(shards, "_sample_shard", lambda *args: calls.append(args) or original(*args))
    result = sample_sharded(molecules, sampler(), work, shard_size=2)
    assert len(calls) == 1  # only the missing shard was sampled
    assert [p.stat().st_mtime_ns for p in finished] == stamps
    assert_same(result.samples, expected)
    with pytest.raises(InputError, match="other settings"):
        sample_sharded(molecules, sampler(), work, shard_size=3)


def test_failed_labels_are_dropped_and_counted(tmp_path, monkeypatch):
    import dens_lightning.data.sampling.sampler as sampler_module  # where Sampler looks it up

    real, calls = sampler_module.label_mmff, []

    def every_third_fails(mol, positions):
        calls.append(1)
        return None if len(calls) % 3 == 0 else real(mol, positions)

    monkeypatch.setattr(sampler_module, "label_mmff", every_third_fails)
    result = sample_sharded(read_molecules(SMILES[:2]), sampler(), tmp_path / "work", per_molecule=3)
    assert result.report.unlabelled == len(calls) // 3 > 0
    assert len(result.samples) == result.report.kept == 6
    assert all(s.energy is not None and s.forces.shape == s.positions.shape for s in result.samples)


def test_sample_command_removes_its_shards_and_checks_workers(tmp_path, capsys):
    from dens_lightning.cli import main

    out = tmp_path / "store"
    argv = [
        "sample",
        "--smiles",
        *SMILES,
        "--num",
        "3",
        "--out",
        str(out),
        "--label",
        "mmff",
        "--no-progress",
    ]
    partial = tmp_path / "store.partial"
    assert main([*argv, "--workers", "1"]) == 0
    assert not partial.exists()  # the shards are removed once the store is written
    assert "wrote 15 conformations of 5 molecules" in capsys.readouterr().out
    assert main([*argv, "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
