"""Langevin dynamics from test structures with a trained model, run until the molecule falls apart
("forces are not enough", Fu et al. 2023: a low force error does not make a stable simulation).

    python -m bench.md_stability --trial CODE SNAPSHOT TEST_FILE PICOSECONDS KELVIN FRAMES [INDEX ...]

Each run starts from one test structure with Maxwell-Boltzmann velocities at the temperature and
integrates with ASE's Langevin (0.5 fs steps, friction 0.01 fs⁻¹, a fixed seed per structure). It
fails at the first step where two atoms come closer than 0.5 Å, a bond of the starting structure
(two atoms closer than 1.2 times the sum of their covalent radii) has stretched or shrunk by more
than 0.5 Å (Fu et al.'s bond-length criterion for small molecules), the kinetic temperature exceeds
five times the target, or a position is not finite. Imports only ASE and numpy at the top, so
MACE's environment runs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
BONDED = 1.2  # bonded: closer than this times the sum of the covalent radii
BOND_CHANGE = 0.5  # Å
CLOSEST = 0.5  # Å
RUNAWAY = 5.0  # times the target temperature


def starting_bonds(atoms) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) closer than 1.2 times the sum of their covalent radii, and their lengths (Å)."""
    from ase.data import covalent_radii

    distances = atoms.get_all_distances()
    radii = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(distances < BONDED * (radii[:, None] + radii[None, :]), k=1))
    return np.stack([i, j], axis=1), distances[i, j]


def failure(atoms, bonds: np.ndarray, lengths: np.ndarray, temperature: float) -> str | None:
    """Why the structure counts as broken now, or None."""
    positions = atoms.get_positions()
    if not np.isfinite(positions).all():
        return "non-finite positions"
    distances = atoms.get_all_distances()
    if distances[np.triu_indices(len(atoms), k=1)].min(initial=np.inf) < CLOSEST:
        return "atoms too close"
    if np.abs(distances[bonds[:, 0], bonds[:, 1]] - lengths).max(initial=0.0) > BOND_CHANGE:
        return "bond"
    if not atoms.get_temperature() <= RUNAWAY * temperature:  # NaN included
        return "temperature"
    return None


def langevin_run(atoms, calculator, picoseconds: float, temperature: float, seed: int) -> dict:
    """Dynamics of a copy of ``atoms`` under ``calculator`` for up to ``picoseconds`` at
    ``temperature`` (K): the time it stayed intact (ps), why it stopped (None: it did not) and the
    mean kinetic temperature (K)."""
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # the centre of mass stays put (ASE's advice over Langevin's fixcm)
    friction = FRICTION_PER_FS / units.fs
    dynamics = Langevin(
        atoms, TIMESTEP_FS * units.fs, temperature_K=temperature, friction=friction, fixcm=False, rng=rng
    )
    bonds, lengths = starting_bonds(atoms)
    steps, temperatures = round(picoseconds * 1000 / TIMESTEP_FS), []
    for step in range(1, steps + 1):
        dynamics.run(1)
        temperatures.append(atoms.get_temperature())
        reason = failure(atoms, bonds, lengths, temperature)
        if reason is not None:
            return {"stable_ps": (step - 1) * TIMESTEP_FS / 1000, "failure": reason, "mean_temperature": None}
    return {"stable_ps": picoseconds, "failure": None, "mean_temperature": float(np.mean(temperatures))}


def calculator(code: str, snapshot: Path):
    """The ASE calculator of one code's saved model (imports the code's own package)."""
    if code == "mace":
        from bench.accuracy_mace import mace_calculator

        return mace_calculator(snapshot)
    if code == "nequip":
        from bench.accuracy_peers import nequip_calculator

        return nequip_calculator(snapshot)
    if code.startswith("schnetpack"):
        from bench.peers import saved_schnetpack_calculator

        return saved_schnetpack_calculator(snapshot)
    from bench.accuracy import our_calculator

    return our_calculator(snapshot)


def starting_frames(test: Path, count: int) -> list:
    """``count`` structures evenly spaced through the test file."""
    from ase.io import read

    frames = read(test, ":")
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).astype(int)]


def trial(
    code: str,
    snapshot: Path,
    test: Path,
    picoseconds: float,
    temperature: float,
    count: int,
    indices: list[int] | None = None,
) -> list:
    """The runs from the ``count`` starting structures, or from those of them at ``indices``
    (each run's seed is its structure's index, so a run does not depend on which others share its
    process)."""
    model = calculator(code, snapshot)
    frames = starting_frames(test, count)
    return [
        langevin_run(frames[index], model, picoseconds, temperature, seed=index)
        for index in (range(count) if indices is None else indices)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trial", nargs="+", metavar="ARG", help="CODE SNAPSHOT TEST PS K FRAMES [INDEX ...]"
    )
    code, snapshot, test, picoseconds, temperature, count, *indices = parser.parse_args().trial
    runs = trial(
        code,
        Path(snapshot),
        Path(test),
        float(picoseconds),
        float(temperature),
        int(count),
        [int(index) for index in indices] or None,
    )
    print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
