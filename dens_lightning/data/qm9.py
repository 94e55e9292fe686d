"""Pretraining conformations around the 130,831 QM9 molecules, offline.

The ``qm9pack`` package (``pip install 'dens_lightning[qm9]'``) ships the QM9 geometries
(B3LYP/6-31G(2df,p) minima, Å) and SMILES as CSV files. They are parsed once into a memory-mapped
conformation store in the cache directory. Structure ``i`` of the pretraining set is molecule
``order[i // samples]`` displaced by Gaussian noise of std ``displacement`` drawn from a generator
seeded by ``(seed, i)``: made on the fly, the same every epoch and on every rank, and redrawn (up
to ten times, then at half the amplitude) when a bond breaks or forms.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..files import exclusive
from .graph import Graph
from .sampling import Sample, bond_graph
from .store import is_store, open_store, write_store
from .structures import Structures, StructureView

CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
STORE_NAME = "qm9-minima-v1"


def qm9pack_data_dir() -> Path:
    """The CSV folder of the installed ``qm9pack`` (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("data.source=qm9 needs the qm9pack package: pip install 'dens_lightning[qm9]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def parse_qm9_csv(path: str | Path) -> list[Sample]:
    """Molecules of one qm9pack CSV file (columns ``SMILES``, ``Elements``, ``XYZ_Ang``)."""
    import pandas as pd
    from ase.data import atomic_numbers

    table = pd.read_csv(path, usecols=["SMILES", "Elements", "XYZ_Ang"])
    molecules = []
    for smiles, elements, xyz in zip(table["SMILES"], table["Elements"], table["XYZ_Ang"]):
        symbols = [s.strip(" '\"") for s in elements.strip("[]").split(",")]
        numbers = np.array([atomic_numbers[s] for s in symbols], dtype=np.int64)
        positions = np.array(xyz.replace("[", "").replace("]", "").split(","), dtype=np.float64)
        molecules.append(Sample(numbers, positions.reshape(len(numbers), 3), smiles, 0))
    return molecules


def qm9_minima(data_dir: str | Path | None = None) -> Path:
    """The conformation store of the QM9 minima, parsed from ``qm9pack`` on first use."""
    from .embedded import cache_dir

    path = cache_dir() / STORE_NAME
    if is_store(path):
        return path
    folder = Path(data_dir) if data_dir is not None else qm9pack_data_dir()
    missing = [name for name in CSV_FILES if not (folder / name).exists()]
    if missing:
        raise InputError(f"{folder}: qm9pack data incomplete, missing {', '.join(missing)}")
    with exclusive(path):  # every rank of a job may ask at once: one parses, the others wait
        if not is_store(path):
            samples = (sample for name in CSV_FILES for sample in parse_qm9_csv(folder / name))
            write_store(path, samples, {"source": "qm9pack", "level": "B3LYP/6-31G(2df,p) minima"})
    return path


class Qm9Conformations:
    """Displaced QM9 molecules, generated per index on the fly (see the module docstring)."""

    units = {"energy": "eV", "length": "Å"}

    def __init__(
        self, minima: Structures, molecules: int | None, samples: int, displacement: float, seed: int
    ):
        total = len(minima)
        count = total if molecules is None else min(int(molecules), total)
        if count < 1:
            raise InputError(f"data.qm9.molecules: {molecules} leaves no molecules")
        self.minima = minima
        self.order = np.random.default_rng(seed).permutation(total)[:count]
        self.samples = int(samples)
        self.displacement = float(displacement)
        self.seed = int(seed)
        self.source = f"qm9 ({count} molecules x {samples} samples, displacement {displacement} Å)"
        self.info = {"molecules": count, "samples": self.samples, "displacement_A": self.displacement}

    def __len__(self) -> int:
        return len(self.order) * self.samples

    @property
    def z(self) -> np.ndarray:
        return self.minima.z

    @property
    def elements(self) -> list[int]:
        return self.minima.elements

    def positions(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers and displaced positions (Å) of structure ``i``."""
        molecule = int(self.order[i // self.samples])
        start, stop = int(self.minima.ptr[molecule]), int(self.minima.ptr[molecule + 1])
        numbers = np.asarray(self.minima.z[start:stop], dtype=np.int64)
        minimum = np.asarray(self.minima.pos[start:stop], dtype=np.float64)
        reference = bond_graph(numbers, minimum)
        rng = np.random.default_rng([self.seed, i])
        scale = self.displacement
        for attempt in range(20):
            if attempt == 10:
                scale /= 2
            positions = minimum + rng.normal(0.0, scale, size=minimum.shape)
            if np.array_equal(bond_graph(numbers, positions), reference):
                return numbers, positions
        return numbers, minimum

    def graph(self, i: int, dtype: torch.dtype = torch.float32) -> Graph:
        numbers, positions = self.positions(i)
        n = len(numbers)
        return Graph(
            z=torch.from_numpy(numbers),
            pos=torch.tensor(positions, dtype=dtype),
            batch=torch.zeros(n, dtype=torch.long),
            ptr=torch.tensor([0, n], dtype=torch.long),
            cell=torch.zeros(1, 3, 3, dtype=dtype),
            pbc=torch.zeros(1, 3, dtype=torch.bool),
            idx=torch.tensor([i], dtype=torch.long),
        )

    def view(self, indices) -> StructureView:
        return StructureView(self, np.asarray(indices, dtype=np.int64))


def qm9_conformations(cfg, data_dir: str | Path | None = None) -> Qm9Conformations:
    """The pretraining set of ``data.qm9`` settings ``cfg``."""
    minima = open_store(qm9_minima(data_dir))
    return Qm9Conformations(minima, cfg.molecules, cfg.samples, cfg.displacement, cfg.seed)
