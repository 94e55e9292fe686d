"""Errors of a model on a set of structures (the ``test`` command and the end of every run)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data.datamodule import Collater, StructureDataset
from .data.graph import Graph
from .data.structures import Structures
from .models.potential import Potential
from .tasks.metrics import EnergyForceMetrics

PER_STRUCTURE_COLUMNS = (
    "index",
    "num_atoms",
    "energy_eV",
    "predicted_energy_eV",
    "energy_error_meV",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
)


def _predictions(
    potential: Potential, structures: Structures, batch_size: int, device: str | torch.device
) -> Iterator[tuple[Graph, dict]]:
    """Batches of ``structures`` in their order, each with the model's energies and forces (eval mode)."""
    dtype = next(potential.parameters()).dtype
    loader = DataLoader(
        StructureDataset(structures, dtype),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=Collater(potential.cutoff, potential.neighbor_backend),
    )
    was_training = potential.training
    potential.eval()
    try:
        for batch in loader:
            batch = batch.to(device)
            yield batch, potential(batch, compute_forces=batch.forces is not None, create_graph=False)
    finally:
        potential.train(was_training)


def evaluate(
    potential: Potential, structures: Structures, batch_size: int = 64, device: str | torch.device = "cpu"
) -> dict:
    """``n_structures`` and the energy/force errors (meV, meV/Å) of ``potential`` on ``structures``.

    Structures without energy or force labels contribute only to what they have.
    """
    metrics = EnergyForceMetrics(sync=False).to(device)  # one process: never gathers across ranks
    for batch, out in _predictions(potential, structures, batch_size, device):
        metrics.update(out["energy"], batch.energy, batch.num_atoms, out.get("forces"), batch.forces)
    return {"n_structures": len(structures), **metrics.compute()}


def structure_errors(
    potential: Potential, structures: Structures, batch_size: int = 64, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """One entry per structure, in order (the columns of ``PER_STRUCTURE_COLUMNS``): reference and
    predicted energy (eV), energy error predicted − reference (meV), and the MAE and RMSE over the
    structure's force components (meV/Å). Missing labels give NaN."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in PER_STRUCTURE_COLUMNS}
    for batch, out in _predictions(potential, structures, batch_size, device):
        n = batch.num_atoms
        energy = out["energy"].double()
        reference = batch.energy.double() if batch.energy is not None else torch.full_like(energy, np.nan)
        mae = rmse = torch.full_like(energy, np.nan)
        if batch.forces is not None:
            error = (out["forces"] - batch.forces).double()
            count = 3 * n.to(error.dtype)
            mae = torch.zeros_like(energy).index_add_(0, batch.batch, error.abs().sum(1)) / count
            rmse = (torch.zeros_like(energy).index_add_(0, batch.batch, error.square().sum(1)) / count).sqrt()
        index = batch.idx if batch.idx is not None else torch.full_like(n, -1)
        for name, value in zip(
            PER_STRUCTURE_COLUMNS,
            (index, n, reference, energy, 1e3 * (energy - reference), 1e3 * mae, 1e3 * rmse),
        ):
            columns[name].append(value.detach().cpu().numpy())
    return {name: np.concatenate(values) for name, values in columns.items()}


def write_structure_errors(path, errors: dict[str, np.ndarray]) -> None:
    """``errors`` (from :func:`structure_errors`) as a CSV file, one row per structure, written atomically."""
    import csv
    import io

    from .files import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PER_STRUCTURE_COLUMNS)
    for row in zip(*(errors[name] for name in PER_STRUCTURE_COLUMNS)):
        writer.writerow([int(v) if i < 2 else f"{float(v):.10g}" for i, v in enumerate(row)])
    write_text_atomic(path, buffer.getvalue())
