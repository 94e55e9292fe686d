"""The QM9 pretraining source: qm9pack's CSV layout, on-the-fly reproducible samples."""

import importlib.util

import numpy as np
import pytest
from omegaconf import OmegaConf

from dens_lightning.cli import main
from dens_lightning.data.qm9 import CSV_FILES, molecule_order, qm9_conformations, qm9_minima, qm9_source
from dens_lightning.data.sampling import bond_graph
from dens_lightning.data.store import open_store
from dens_lightning.errors import InputError

HEADER = "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,HOMO_au\n"
WATER = (
    '"w.xyz",3,"O","InChI",3,"[2,0,0,1,0]","[\'O\',\'H\',\'H\']",'
    '"[[-0.0343,0.9775,0.0076],[0.0647,0.0205,0.0015],[0.8717,1.3006,0.0007]]",-0.29\n'
)
METHANE = (
    "\"m.xyz\",1,\"C\",\"InChI\",5,\"[4,1,0,0,0]\",\"['C','H','H','H','H']\","
    '"[[-0.0127,1.0858,0.0080],[0.0022,-0.0060,0.0020],[1.0117,1.4638,0.0003],'
    '[-0.5408,1.4475,-0.8766],[-0.5238,1.4379,0.9064]]",-0.39\n'
)


HYDRONIUM = (  # no neutral bond orders: MMFF94 cannot type it, the normal-mode sampler drops it
    '"h.xyz",9,"[OH3]","InChI",4,"[3,0,0,1,0]","[\'O\',\'H\',\'H\',\'H\']",'
    '"[[0.0,0.0,0.0],[0.96,0.0,0.0],[-0.3,0.9,0.0],[-0.3,-0.45,0.8]]",-0.5\n'
)


def settings(**changes):
    values = {"molecules": None, "samples": 3, "method": "perturb", "displacement": 0.05, "seed": 1}
    return OmegaConf.create({**values, "temperature": 500.0, "labeller": "none", **changes})


@pytest.fixture
def fake_qm9pack(tmp_path, monkeypatch):
    monkeypatch.setenv("DENS_LIGHTNING_CACHE", str(tmp_path / "cache"))
    for name, rows in zip(CSV_FILES, ([WATER], [METHANE], [WATER, METHANE])):
        (tmp_path / name).write_text(HEADER + "".join(rows))
    return tmp_path


def normal_mode_set(data_dir, **changes):
    return qm9_source(settings(method="normal-mode", **changes), data_dir=data_dir)


def test_qm9pack_layout_is_parsed_and_samples_are_reproducible(fake_qm9pack):
    conformations = qm9_conformations(settings(), data_dir=fake_qm9pack)
    assert len(conformations) == 4 * 3
    assert conformations.elements == [1, 6, 8]
    first, again = conformations.graph(5), conformations.graph(5)
    assert np.array_equal(first.pos.numpy(), again.pos.numpy())
    numbers, positions = conformations.positions(5)
    molecule = int(conformations.order[5 // 3])
    start, stop = conformations.minima.ptr[molecule], conformations.minima.ptr[molecule + 1]
    minimum = np.asarray(conformations.minima.pos[start:stop], dtype=np.float64)
    displacement = positions - minimum
    assert 0 < np.abs(displacement).max() < 0.5
    assert np.array_equal(bond_graph(numbers, positions), bond_graph(numbers, minimum))
    assert not np.array_equal(conformations.positions(3)[1], conformations.positions(4)[1])
    assert len(qm9_conformations(settings(molecules=2), data_dir=fake_qm9pack)) == 2 * 3


def test_normal_mode_samples_keep_bonds_and_are_reproducible(fake_qm9pack):
    (fake_qm9pack / CSV_FILES[1]).write_text(HEADER + METHANE + HYDRONIUM)
    structures, info = normal_mode_set(fake_qm9pack)
    assert info["method"] == "normal-mode" and info["molecules"] == 5
    assert info["untyped"] == 1  # the hydronium ion: dropped and counted, not kept
    assert len(structures) == info["structures"] == 4 * 3
    minima = open_store(qm9_minima())

    def atoms(molecule):
        start, stop = int(minima.ptr[molecule]), int(minima.ptr[molecule + 1])
        return np.asarray(minima.z[start:stop], dtype=np.int64), np.asarray(
            minima.pos[start:stop], np.float64
        )

    order = molecule_order(len(minima), None, 1)
    kept = [m for m in order if atoms(m)[0].tolist() != [8, 1, 1, 1]]  # all but the ion, in the seeded order
    for j, molecule in enumerate(kept):
        numbers, minimum = atoms(molecule)
        for k in range(3):
            sample = structures.ptr[3 * j + k], structures.ptr[3 * j + k + 1]
            assert np.array_equal(structures.z[sample[0] : sample[1]], numbers)
            positions = np.asarray(structures.pos[sample[0] : sample[1]], dtype=np.float64)
            assert 0.005 < np.abs(positions - minimum).max() < 0.6
            assert np.array_equal(bond_graph(numbers, positions), bond_graph(numbers, minimum))
    again, _ = normal_mode_set(fake_qm9pack)  # cached: the same store
    assert np.array_equal(np.asarray(again.pos), np.asarray(structures.pos))
    hotter, _ = normal_mode_set(fake_qm9pack, temperature=1000.0)  # other settings: another store
    assert not np.array_equal(np.asarray(hotter.pos), np.asarray(structures.pos))


def test_normal_mode_samples_can_be_labelled(fake_qm9pack):
    structures, info = normal_mode_set(fake_qm9pack, molecules=2, labeller="mmff")
    assert info["labeller"] == "mmff" and len(structures) == 2 * 3
    assert structures.energy.shape == (6,) and np.isfinite(structures.energy).all()
    assert structures.forces.shape == (len(structures.z), 3) and np.abs(structures.forces).max() > 0


def test_incomplete_qm9pack_data_is_named(fake_qm9pack):
    (fake_qm9pack / CSV_FILES[1]).unlink()
    with pytest.raises(InputError, match=CSV_FILES[1]):
        qm9_conformations(settings(), data_dir=fake_qm9pack)


def test_qm9_is_refused_for_finetuning(capsys):
    assert main(["finetune", "data.source=qm9"]) == 2
    assert "pretrain" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason="qm9pack (extra 'qm9') not installed")
def test_pretrain_on_qm9(tmp_path):
    from dens_lightning.artifacts import read_metadata

    run_dir = tmp_path / "pre"
    argv = [
        "pretrain",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        "data.source=qm9",
        "data.qm9.molecules=64",
    ]
    small = [
        "model.name=schnet",
        "model.hidden_channels=16",
        "model.num_filters=16",
        "model.num_interactions=1",
        "model.num_rbf=8",
    ]
    assert main([*argv, *small, "trainer.max_epochs=1", "data.batch_size=32"]) == 0
    metadata = read_metadata(run_dir / "model.safetensors")
    recorded = metadata["data"]["qm9"]
    assert recorded["method"] == "normal-mode" and recorded["molecules"] == 64 and recorded["samples"] == 4
    assert recorded["structures"] == 4 * (64 - recorded["untyped"])
    assert metadata["data"]["sizes"]["train"] + metadata["data"]["sizes"]["val"] == recorded["structures"]
