"""The sampler: conformers of each molecule → samples that keep the minimum's bond graph → labels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError
from .labellers import label_mmff, label_xtb, resolve_labeller
from .methods import METHODS, bond_graph, md_samples, normal_mode_sample, perturb
from .mmff import mmff_field, normal_modes
from .molecules import Molecule, conformers, molecule_from_geometry


@dataclass
class Sample:
    numbers: np.ndarray
    positions: np.ndarray  # Å
    smiles: str
    conformer: int
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # eV/Å


@dataclass
class SamplingReport:
    kept: int = 0
    rejected_bonds: int = 0  # samples whose bond graph changed
    unlabelled: int = 0  # samples whose labelling failed (xTB SCF not converged)
    untyped: int = 0  # molecules given as a geometry without neutral bond orders or MMFF94 types


@dataclass
class Sampler:
    """Draws ``samples`` conformations per conformer, ``conformers`` conformers per molecule.

    Each molecule has its own random stream (``seed``, its position in the list), so the samples of
    a molecule do not depend on which other molecules are sampled.
    """

    method: str = "normal-mode"
    temperature: float = 300.0  # K
    displacement: float = 0.05  # Å (perturb)
    conformers: int = 1
    samples: int = 10
    labeller: str = "none"
    seed: int = 0
    max_attempts: int = 20  # per kept sample, before giving up on a conformer
    report: SamplingReport = field(default_factory=SamplingReport)

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"sampling method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.temperature <= 0:
            raise InputError(f"temperature {self.temperature}: expected a temperature in K > 0")
        self.labeller = resolve_labeller(self.labeller)

    def sample(self, molecules: list[Molecule]) -> Iterator[Sample]:
        for k, molecule in enumerate(molecules):
            yield from self.sample_molecule(molecule, self.molecule_rng(k))

    def molecule_rng(self, k: int) -> np.random.Generator:
        """The random stream of the ``k``-th molecule of a list."""
        return np.random.default_rng([self.seed, k])

    def sample_molecule(self, molecule: Molecule, rng: np.random.Generator) -> Iterator[Sample]:
        if molecule.minimum is None:
            mol, numbers, minima = conformers(molecule.mol, self.conformers, int(rng.integers(2**31)))
        else:
            numbers, minima = molecule.numbers, [molecule.minimum]
            mol = molecule.mol
            if mol is None:
                try:
                    mol = molecule_from_geometry(numbers, molecule.minimum, molecule.smiles)
                except InputError:
                    self.report.untyped += 1
                    return
        for c, minimum in enumerate(minima):
            reference = bond_graph(numbers, minimum)
            draws = self._draws(mol, minimum, rng)
            kept = attempts = 0
            while kept < self.samples and attempts < self.max_attempts * self.samples:
                attempts += 1
                positions = next(draws)
                if not np.array_equal(bond_graph(numbers, positions), reference):
                    self.report.rejected_bonds += 1
                    continue
                sample = Sample(numbers, positions, molecule.smiles, c)
                if self.labeller != "none" and not self._label(sample, mol):
                    self.report.unlabelled += 1
                    continue
                kept += 1
                self.report.kept += 1
                yield sample

    def _draws(self, mol, minimum: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
        if self.method == "normal-mode":
            constants, modes = normal_modes(mmff_field(mol), minimum)
            while True:
                yield normal_mode_sample(minimum, constants, modes, self.temperature, rng)
        elif self.method == "md":
            while True:
                yield from md_samples(mol, minimum, self.samples, self.temperature, rng)
        else:
            while True:
                yield perturb(minimum, self.displacement, rng)

    def _label(self, sample: Sample, mol) -> bool:
        label = (
            label_xtb(sample.numbers, sample.positions)
            if self.labeller == "xtb"
            else label_mmff(mol, sample.positions)
        )
        if label is None:
            return False
        sample.energy, sample.forces = label
        return True

    def describe(self) -> dict:
        """What goes in each frame's info line."""
        info = {"method": self.method, "labeller": self.labeller}
        if self.method == "perturb":
            info["displacement"] = self.displacement
        else:
            info["temperature"] = self.temperature
        return info
