"""bench.zbl_switch_md's per-pair switch: each element pair's ZBL term ends below the shortest
distance of that pair in a training file, and at the radii sum where that is shorter."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.data import covalent_radii
from ase.io import write

from bench.zbl_switch_md import shortest_distances, switch_at_shortest
from dens_lightning.models.repulsion import ZBLRepulsion
from dens_lightning.testing.molecules import dimer_energy


def test_the_switch_moves_below_the_shortest_training_distance_of_each_pair(tmp_path):
    frames = [  # C-H at 1.00 and 0.95 Å, H-H 2.04 Å apart at the closest
        Atoms("CHH", positions=[[0, 0, 0], [1.0, 0, 0], [-1.0, 0.5, 0]]),
        Atoms("CHH", positions=[[0, 0, 0], [0.95, 0, 0], [-1.0, 0.6, 0]]),
    ]
    path = tmp_path / "train.extxyz"
    write(path, frames)
    shortest = shortest_distances(path)
    assert shortest[(1, 6)] == pytest.approx(0.95)
    assert shortest[(1, 1)] == pytest.approx(np.hypot(1.95, 0.6))
    repulsion = switch_at_shortest(ZBLRepulsion(max_z=10), shortest, factor=0.9).double()
    ch = 0.9 * 0.95  # below the C-H radii sum (1.07 Å): the switch moves in
    assert dimer_energy(repulsion, 6, 1, ch + 1e-3) == 0.0 < dimer_energy(repulsion, 1, 6, ch - 0.05)
    hh = 2 * covalent_radii[1]  # 0.62 Å, below 0.9 x H-H's shortest: the radii sum stays
    assert dimer_energy(repulsion, 1, 1, hh - 0.02) > 0.0
    untouched = ZBLRepulsion(max_z=10).double()  # a pair absent from the file keeps its sum
    assert dimer_energy(repulsion, 6, 6, 1.4) == dimer_energy(untouched, 6, 6, 1.4) > 0.0


def test_an_uncapped_switch_may_reach_beyond_the_radii_sum(tmp_path):
    path = tmp_path / "train.extxyz"
    write(path, [Atoms("HH", positions=[[0, 0, 0], [1.5, 0, 0]])])
    shortest = shortest_distances(path)
    capped = switch_at_shortest(ZBLRepulsion(max_z=10), shortest, factor=0.9).double()
    uncapped = switch_at_shortest(ZBLRepulsion(max_z=10), shortest, factor=0.9, capped=False).double()
    assert dimer_energy(capped, 1, 1, 1.0) == 0.0  # beyond the H-H radii sum, 0.62 Å
    assert dimer_energy(uncapped, 1, 1, 1.0) > 0.0  # inside 0.9 x 1.5 Å
    assert dimer_energy(uncapped, 1, 1, 1.36) == 0.0
