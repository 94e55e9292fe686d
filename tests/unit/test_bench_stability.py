"""The MD-stability criteria of bench.md_stability on toy potentials whose fate is known."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes

from bench.md_stability import failure, langevin_run, starting_bonds


class Tethered(Calculator):
    """Each atom on a stiff spring to where it started (``stiffness`` eV/Å²; 0: no forces at all)."""

    implemented_properties = ("energy", "forces")

    def __init__(self, anchor: np.ndarray, stiffness: float):
        super().__init__()
        self.anchor, self.stiffness = anchor.copy(), stiffness

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        shift = self.atoms.get_positions() - self.anchor
        self.results = {
            "energy": 0.5 * self.stiffness * float((shift**2).sum()),
            "forces": -self.stiffness * shift,
        }


def test_ethanol_has_eight_bonds():
    bonds, lengths = starting_bonds(molecule("CH3CH2OH"))
    assert len(bonds) == 8  # C-C, C-O, O-H and five C-H
    assert lengths.min() > 0.9 and lengths.max() < 1.6


def test_free_atoms_fly_apart_and_tethered_ones_stay():
    ethanol = molecule("CH3CH2OH")
    free = langevin_run(ethanol, Tethered(ethanol.positions, 0.0), 0.5, 500.0, seed=0)
    assert free["failure"] == "bond" and 0 < free["stable_ps"] < 0.5
    held = langevin_run(ethanol, Tethered(ethanol.positions, 30.0), 0.1, 500.0, seed=0)
    assert held["failure"] is None and held["stable_ps"] == 0.1
    assert 150 < held["mean_temperature"] < 1500


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 0.8), "bond"),
        (lambda a: a.positions.__setitem__(1, a.positions[0] + [0.3, 0, 0]), "atoms too close"),
        (lambda a: a.set_velocities(np.full((len(a), 3), 0.5)), "temperature"),
        (lambda a: a.positions.__setitem__((2, 1), np.nan), "non-finite positions"),
    ],
)
def test_each_failure_is_named(change, reason):
    ethanol = molecule("CH3CH2OH")
    bonds, lengths = starting_bonds(ethanol)
    assert failure(ethanol, bonds, lengths, 500.0) is None
    change(ethanol)
    assert failure(ethanol, bonds, lengths, 500.0) == reason


def test_a_run_is_the_same_alone_as_beside_the_others(tmp_path, monkeypatch):
    """bench.stability runs each structure in its own process: its seed is the structure's index."""
    import ase.io

    from bench import md_stability

    ethanol = molecule("CH3CH2OH")
    frames = []
    for seed in range(4):
        frame = ethanol.copy()
        frame.positions += np.random.default_rng(seed).normal(0.0, 0.02, frame.positions.shape)
        frames.append(frame)
    ase.io.write(tmp_path / "test.xyz", frames)
    monkeypatch.setattr(md_stability, "calculator", lambda code, path: Tethered(ethanol.positions, 0.0))
    arguments = ("toy", tmp_path / "model", tmp_path / "test.xyz", 0.5, 500.0, 3)
    together = md_stability.trial(*arguments)
    assert len(together) == 3 and len({run["stable_ps"] for run in together}) > 1
    assert md_stability.trial(*arguments, indices=[2, 0]) == [together[2], together[0]]
