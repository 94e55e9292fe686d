"""Pretraining conformations around the 130,831 QM9 molecules, offline.

The ``qm9pack`` package (``pip install 'dens_lightning[qm9]'``) ships the QM9 geometries
(B3LYP/6-31G(2df,p) minima, Å) and SMILES as CSV files. They are parsed once into a memory-mapped
conformation store in the cache directory. The molecules are taken in a seeded order (``seed``),
the first ``molecules`` of it. Two samplers:

- ``normal-mode``: ANI-1-style normal-mode samples (:mod:`dens_lightning.data.sampling`) around each
  DFT minimum, on the MMFF94 Hessian at that geometry (bond orders from the geometry; the DFT minimum
  is not the MMFF94 one, so curvatures are taken in absolute value, floored). Sampled once on every
  core, optionally labelled (GFN2-xTB, MMFF94), cached as a conformation store; a killed run
  continues where it stopped. Molecules without neutral bond orders or MMFF94 types are dropped
  and counted (``untyped`` in the store's ``info.json``).
- ``perturb``: structure ``i`` is molecule ``order[i // samples]`` displaced by Gaussian noise of
  std ``displacement`` drawn from a generator seeded by ``(seed, i)``: made on the fly, the same
  every epoch and on every rank, and redrawn (up to ten times, then at half the amplitude) when a
  bond breaks or forms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..files import exclusive
from .graph import Graph
from .sampling import Molecule, Sample, Sampler, bond_graph, resolve_labeller
from .shards import sample_to_store
from .store import is_store, open_store, store_info, structure_smiles, write_store
from .structures import Structures, StructureView

METHODS = ("normal-mode", "perturb")  # data.qm9.method: sampled once around the minima, or on the fly

CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
STORE_NAME = "qm9-minima-v1"
NORMAL_MODE_FORMAT = 1  # bump when the normal-mode generator changes, so old caches are not reused
SHARD = 64  # molecules per shard of a normal-mode sampling run


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
        self.minima = minima
        self.order = molecule_order(len(minima), molecules, seed)
        count = len(self.order)
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


def molecule_order(total: int, molecules: int | None, seed: int) -> np.ndarray:
    """Indices of the molecules used: the first ``molecules`` of a permutation seeded by ``seed``."""
    count = total if molecules is None else min(int(molecules), total)
    if count < 1:
        raise InputError(f"data.qm9.molecules: {molecules} leaves no molecules")
    return np.random.default_rng(seed).permutation(total)[:count]


def qm9_conformations(cfg, data_dir: str | Path | None = None) -> Qm9Conformations:
    """The on-the-fly Gaussian-displacement set of ``data.qm9`` settings ``cfg`` (method perturb)."""
    minima = open_store(qm9_minima(data_dir))
    return Qm9Conformations(minima, cfg.molecules, cfg.samples, cfg.displacement, cfg.seed)


def qm9_normal_mode_store(cfg, data_dir: str | Path | None = None, progress: bool = False) -> Path:
    """The conformation store of ``cfg.samples`` normal-mode samples at ``cfg.temperature`` around
    each selected QM9 minimum (labelled by ``cfg.labeller``), sampled on first use."""
    from .embedded import cache_dir

    minima_path = qm9_minima(data_dir)
    params = {
        "minima": STORE_NAME,
        "molecules": cfg.molecules,
        "samples": int(cfg.samples),
        "temperature": float(cfg.temperature),
        "labeller": resolve_labeller(cfg.labeller),
        "seed": int(cfg.seed),
        "format": NORMAL_MODE_FORMAT,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"qm9-normal-mode-{params['labeller']}-{digest}"
    if is_store(path):
        return path
    with exclusive(path):  # every rank of a job may ask at once: one samples, the others wait
        if not is_store(path):
            molecules = _minima_molecules(minima_path, cfg.molecules, cfg.seed)
            sampler = Sampler(
                method="normal-mode",
                temperature=params["temperature"],
                samples=params["samples"],
                labeller=params["labeller"],
                seed=params["seed"],
            )
            info = {**params, "molecule_count": len(molecules)}
            sample_to_store(path, molecules, sampler, info, shard_size=SHARD, progress=progress)
    return path


def _minima_molecules(minima_path: Path, molecules: int | None, seed: int) -> list[Molecule]:
    """The selected QM9 minima as molecules to sample around (typed for MMFF94 in the workers)."""
    minima, smiles = open_store(minima_path), structure_smiles(minima_path)
    selected = []
    for molecule in molecule_order(len(minima), molecules, seed):
        start, stop = int(minima.ptr[molecule]), int(minima.ptr[molecule + 1])
        numbers = np.asarray(minima.z[start:stop], dtype=np.int64)
        minimum = np.asarray(minima.pos[start:stop], dtype=np.float64)
        selected.append(Molecule(smiles[molecule], None, numbers, minimum))
    return selected


def qm9_source(cfg, data_dir: str | Path | None = None) -> tuple[Structures | Qm9Conformations, dict]:
    """The pretraining set of ``data.qm9`` settings ``cfg`` and what the model file records of it."""
    if cfg.method == "perturb":
        structures = qm9_conformations(cfg, data_dir)
        return structures, {"method": "perturb", **structures.info}
    path = qm9_normal_mode_store(cfg, data_dir)
    info = store_info(path)
    keys = ("samples", "temperature", "labeller", "structures", "rejected_bonds", "unlabelled", "untyped")
    summary = {"molecules": info["molecule_count"], **{k: info.get(k) for k in keys}}
    return open_store(path), {"method": "normal-mode", "path": str(path), **summary}
