"""Errors of a model on a set of structures (the ``test`` command and the end of every run)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from .data.datamodule import Collater, StructureDataset
from .data.structures import Structures
from .models.potential import Potential
from .tasks.metrics import EnergyForceMetrics


def evaluate(
    potential: Potential, structures: Structures, batch_size: int = 64, device: str | torch.device = "cpu"
) -> dict:
    """``n_structures`` and the energy/force errors (meV, meV/Å) of ``potential`` on ``structures``.

    Structures without energy or force labels contribute only to what they have.
    """
    dtype = next(potential.parameters()).dtype
    loader = DataLoader(
        StructureDataset(structures, dtype),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=Collater(potential.cutoff, potential.neighbor_backend),
    )
    metrics = EnergyForceMetrics(sync=False).to(device)  # one process: never gathers across ranks
    was_training = potential.training
    potential.eval()
    for batch in loader:
        batch = batch.to(device)
        out = potential(batch, compute_forces=batch.forces is not None, create_graph=False)
        metrics.update(out["energy"], batch.energy, batch.num_atoms, out.get("forces"), batch.forces)
    potential.train(was_training)
    return {"n_structures": len(structures), **metrics.compute()}
