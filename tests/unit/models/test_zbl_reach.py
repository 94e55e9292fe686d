"""The ZBL switch per element pair: ``model.zbl_reach`` (set by hand) and ``model.zbl_data_switch``
(set at training start from each pair's shortest distance in the training split)."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii
from ase.io import read
from ase.neighborlist import neighbor_list
from omegaconf import OmegaConf

from dens_lightning.artifacts import load_potential, read_metadata
from dens_lightning.config import model_hyperparameters
from dens_lightning.data.atoms import atoms_graph
from dens_lightning.data.checks import shortest_pair_distances
from dens_lightning.data.neighbors import with_neighbors
from dens_lightning.data.structures import Structures
from dens_lightning.errors import InputError
from dens_lightning.models.repulsion import ZBLRepulsion, pair_name, parse_reach, reach_from_data
from dens_lightning.testing.molecules import dimer_energy
from tests.conftest import FAST


def test_a_pair_given_a_reach_switches_there_and_the_others_keep_the_radii_sum():
    reach = parse_reach({"C-H": 0.8, "H-H": 1.2}, cutoff=5.0)
    assert reach == {(1, 6): 0.8, (1, 1): 1.2}
    per_pair, radii = ZBLRepulsion(10, reach=reach).double(), ZBLRepulsion(10).double()
    assert dimer_energy(per_pair, 6, 1, 0.8 + 1e-6) == 0.0 < dimer_energy(radii, 6, 1, 0.8 + 1e-6)
    assert dimer_energy(per_pair, 1, 6, 0.7) > 0.0  # either order of the two atoms
    assert dimer_energy(radii, 1, 1, 1.0) == 0.0 < dimer_energy(per_pair, 1, 1, 1.0)  # beyond 0.62 Å
    assert dimer_energy(per_pair, 6, 6, 1.3) == dimer_energy(radii, 6, 6, 1.3) > 0.0  # not listed


@pytest.mark.parametrize(
    "model, key",
    [
        ({"zbl_reach": {"X-H": 1.0}}, "'X-H'"),
        ({"zbl_reach": {"CH": 1.0}}, "'CH'"),
        ({"zbl_reach": {"C-H": 0.0}}, "zbl_reach.C-H=0.0"),
        ({"zbl_reach": {"C-H": 6.0}}, "zbl_reach.C-H=6.0"),
        ({"zbl_data_switch": 0.0}, "zbl_data_switch=0.0"),
        ({"zbl_data_switch": 1.5}, "zbl_data_switch=1.5"),
        ({"zbl_reach": [1.0]}, "model"),
    ],
)
def test_bad_per_pair_settings_are_refused_naming_the_key(model, key):
    cfg = OmegaConf.create({"model": {"name": "painn", "zbl": True, **model}})
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        model_hyperparameters(cfg)


def test_the_reach_from_data_is_a_fraction_of_the_shortest_distance_capped_at_the_cutoff():
    reach = reach_from_data({(1, 6): 1.0871, (1, 1): 1.5127, (6, 6): 4.9}, fraction=0.9, cutoff=4.0)
    assert list(reach) == ["H-H", "C-H", "C-C"]  # heavier element first
    assert reach["C-H"] <= 0.9 * 1.0871 < reach["C-H"] + 1e-4  # rounded down: never beyond
    assert reach["C-C"] == 4.0
    assert pair_name(8, 1) == pair_name(1, 8) == "O-H"


def test_shortest_pair_distances_match_ase_for_molecules_and_cells():
    rng = np.random.default_rng(3)
    frames = [Atoms("CH3OH", positions=rng.uniform(0, 3, (6, 3))) for _ in range(3)]
    frames.append(Atoms("NH3", positions=rng.uniform(0, 2, (4, 3))))
    salt = bulk("NaCl", "rocksalt", a=5.6).repeat(2)
    salt.rattle(0.1, seed=1)
    frames.append(salt)  # the closest Na-Cl and Cl-Cl pairs cross the cell boundary
    structures = Structures.from_frames(
        [a.numbers for a in frames],
        [a.positions for a in frames],
        cells=[a.cell.array for a in frames],
        pbcs=[a.pbc for a in frames],
    )
    expected: dict[tuple[int, int], float] = {}
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, 4.5)
        for a, b, distance in zip(atoms.numbers[i], atoms.numbers[j], d):
            key = (int(min(a, b)), int(max(a, b)))
            expected[key] = min(expected.get(key, np.inf), float(distance))
    got = shortest_pair_distances(structures, 4.5)
    assert set(got) == set(expected) and {(11, 17), (17, 17), (1, 1), (1, 7)} <= set(got)
    for key, distance in expected.items():
        assert got[key] == pytest.approx(distance, rel=1e-12)


def test_a_finetune_sets_the_reach_from_its_training_split_and_the_model_file_keeps_it(tmp_path):
    from dens_lightning.cli import main

    run_dir = tmp_path / "finetune"
    argv = ["finetune", "--run-dir", str(run_dir), *FAST, "trainer.max_steps=2"]
    assert main([*argv, "model.zbl=true", "model.zbl_reach={Si-H: 1.3}"]) == 0  # the default: 0.9
    splits = json.loads((run_dir / "splits.json").read_text())
    frames = read(splits["source"], ":")
    train = [frames[i] for i in splits["indices"]["train"]]
    shortest: dict[str, float] = {}
    for atoms in train:
        i, j = np.triu_indices(len(atoms), k=1)
        for a, b, d in zip(atoms.numbers[i], atoms.numbers[j], atoms.get_all_distances()[i, j]):
            key = pair_name(int(a), int(b))
            shortest[key] = min(shortest.get(key, np.inf), float(d))
    reach = read_metadata(run_dir / "model.safetensors")["backbone"]["hyperparameters"]["zbl_reach"]
    assert set(reach) == {*shortest, "Si-H"} and reach["Si-H"] == 1.3  # given, absent from the data
    for key, distance in shortest.items():
        assert 0.9 * distance - 1e-4 < reach[key] <= 0.9 * distance
    repulsion = load_potential(run_dir / "model.safetensors").double().repulsion
    energies = [float(repulsion(with_neighbors(atoms_graph([a], torch.float64), 5.0))[0]) for a in train]
    assert energies == [0.0] * len(train)  # zero on every training structure, by construction
    hh = reach["H-H"]
    assert hh > 2 * covalent_radii[1] and dimer_energy(repulsion, 1, 1, hh - 0.2) > 0.0


def test_without_the_data_switch_or_the_repulsion_the_reach_stays_as_given():
    from dens_lightning.runner import _zbl_reach_from_data

    class Data:
        def shortest_pair_distances(self):
            return {(1, 1): 1.5, (1, 6): 1.0}

    for zbl, fraction in ((True, None), (False, 0.9)):
        hparams = {"zbl": zbl, "zbl_data_switch": fraction, "zbl_reach": {"C-H": 0.7}, "cutoff": 5.0}
        _zbl_reach_from_data(hparams, Data())
        assert hparams["zbl_reach"] == {"C-H": 0.7}
    hparams = {"zbl": True, "zbl_data_switch": 0.8, "zbl_reach": {"C-H": 0.7, "O-H": 0.6}, "cutoff": 5.0}
    _zbl_reach_from_data(hparams, Data())
    assert hparams["zbl_reach"] == {"C-H": 0.8, "O-H": 0.6, "H-H": 1.2}  # the data's pairs replaced
