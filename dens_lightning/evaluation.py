"""Errors of a model on a set of structures, overall and per structure (the ``test`` command, the
experiments' per-structure errors); training runs test through their Lightning task instead."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data.graph import collate
from .data.loading import StructureDataset
from .data.structures import Structures, StructureView
from .errors import InputError
from .files import write_text_atomic
from .metrics import EnergyForceMetrics
from .models.potential import Potential

PER_STRUCTURE_COLUMNS = (
    "index",
    "num_atoms",
    "energy_eV",
    "predicted_energy_eV",
    "energy_error_meV",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
)


def evaluate_structures(
    potential: Potential,
    structures: Structures | StructureView,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[dict, dict[str, np.ndarray]]:
    """One pass over ``structures``: ``n_structures`` and the energy/force errors (meV, meV/Å; a
    structure without energy or force labels counts only for what it has), and one entry per
    structure, in order (the columns of ``PER_STRUCTURE_COLUMNS``): reference and predicted energy
    (eV), energy error predicted − reference (meV), and the MAE and RMSE over the structure's force
    components (meV/Å). Missing labels give NaN."""
    loader = structure_loader(potential, structures, batch_size)
    metrics = EnergyForceMetrics(sync=False).to(device)  # one process: never gathers across ranks
    columns: dict[str, list[np.ndarray]] = {name: [] for name in PER_STRUCTURE_COLUMNS}
    was_training = potential.training
    potential.eval()
    try:
        for batch in loader:
            batch = batch.to(device)
            out = potential(batch, compute_forces=batch.forces is not None, create_graph=False)
            metrics.update(out["energy"], batch.energy, batch.num_atoms, out.get("forces"), batch.forces)
            for name, value in zip(PER_STRUCTURE_COLUMNS, _per_structure(batch, out)):
                columns[name].append(value.detach().cpu().numpy())
    finally:
        potential.train(was_training)
    errors = {"n_structures": len(structures), **metrics.compute()}
    return errors, {name: np.concatenate(values) for name, values in columns.items()}


def structure_loader(
    potential: Potential, structures: Structures | StructureView, batch_size: int
) -> DataLoader:
    """``structures`` in order, in batches with the neighbour lists of ``potential``, in its dtype."""
    return DataLoader(
        StructureDataset(structures, next(potential.parameters()).dtype),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,  # the neighbour list is the model's to build
    )


@torch.no_grad()
def predict_energies(
    potential: Potential,
    structures: Structures | StructureView,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The energy (eV) ``potential`` predicts for each structure, in order (no forces)."""
    was_training = potential.training
    potential.eval()
    try:
        energies = [
            potential(batch.to(device), compute_forces=False)["energy"].double().cpu().numpy()
            for batch in structure_loader(potential, structures, batch_size)
        ]
    finally:
        potential.train(was_training)
    return np.concatenate(energies)


def _per_structure(batch, out: dict) -> tuple:
    """The ``PER_STRUCTURE_COLUMNS`` of one evaluated batch (``idx``: each structure's index in its file)."""
    n = batch.num_atoms
    energy = out["energy"].double()
    reference = batch.energy.double() if batch.energy is not None else torch.full_like(energy, np.nan)
    mae = rmse = torch.full_like(energy, np.nan)
    if batch.forces is not None:
        error = (out["forces"] - batch.forces).double()
        count = 3 * n.to(error.dtype)
        mae = torch.zeros_like(energy).index_add_(0, batch.batch, error.abs().sum(1)) / count
        rmse = (torch.zeros_like(energy).index_add_(0, batch.batch, error.square().sum(1)) / count).sqrt()
    return batch.idx, n, reference, energy, 1e3 * (energy - reference), 1e3 * mae, 1e3 * rmse


def write_structure_errors(path: str | Path, errors: dict[str, np.ndarray]) -> None:
    """Per-structure ``errors`` (from :func:`evaluate_structures`) as a CSV file, one row per
    structure, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PER_STRUCTURE_COLUMNS)
    for row in zip(*(errors[name] for name in PER_STRUCTURE_COLUMNS)):
        writer.writerow([int(v) if i < 2 else f"{float(v):.10g}" for i, v in enumerate(row)])
    write_text_atomic(path, buffer.getvalue())


def read_structure_errors(path: str | Path) -> dict[str, np.ndarray]:
    """The columns of a CSV file that :func:`write_structure_errors` wrote."""
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    return {name: np.array([float(r[name]) for r in records]) for name in PER_STRUCTURE_COLUMNS}


def model_errors(
    model_path: str | Path,
    data_path: str | Path,
    batch_size: int = 64,
    read_options=None,
    per_structure: str | Path | None = None,
) -> dict:
    """The ``test`` command: errors of a model file (or a run directory) on a data file; with
    ``per_structure``, each structure's errors are also written to that CSV file."""
    from .allocator import keep_freed_memory
    from .artifacts import load_potential, resolve_model_path
    from .data.readers import read_structures

    keep_freed_memory()
    potential = load_potential(resolve_model_path(model_path))
    structures = read_structures(data_path, read_options)
    if structures.energy is None and structures.forces is None:
        raise InputError(f"{data_path}: no energies or forces to test against")
    errors, each = evaluate_structures(potential, structures, batch_size)
    if per_structure:
        write_structure_errors(per_structure, each)
    return errors
