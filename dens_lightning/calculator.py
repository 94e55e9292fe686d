"""An ASE calculator around a trained model: energies (eV) and forces (eV/Å) for dynamics,
relaxations and anything else ASE drives.

    from dens_lightning.calculator import DensCalculator
    atoms.calc = DensCalculator("runs/finetune/aspirin")   # a run directory, model file or model
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .data.graph import collate
from .data.structures import Structures
from .models.potential import Potential


def atoms_structures(images: Sequence[Atoms]) -> Structures:
    """ASE structures (positions in Å) as :class:`Structures`; cells and periodicity kept."""
    return Structures.from_frames(
        numbers=[a.numbers for a in images],
        positions=[a.positions for a in images],
        cells=[np.asarray(a.cell.array) for a in images],
        pbcs=[np.asarray(a.pbc) for a in images],
    )


class DensCalculator(Calculator):
    """Energies and forces of a dens_lightning model. ``model``: a run directory, a
    ``model.safetensors`` file or a loaded :class:`Potential`; ``device``: where it runs.

    The model runs in its own precision (float64 models give float64 dynamics). ``batch`` evaluates
    many structures in one call (one batched forward).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: str | Path | Potential, device: str | torch.device = "cpu", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, Potential):
            from . import load_model

            model = load_model(model, device=device)
        self.potential = model.to(device).eval()
        self.device = torch.device(device)
        self.dtype = next(self.potential.parameters()).dtype

    def batch(self, images: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies [B] (eV) and forces ([N_b, 3] each, eV/Å) of many structures at once."""
        structures = atoms_structures(images)
        graph = collate([structures.graph(i, self.dtype) for i in range(len(images))])
        out = self.potential(graph.to(self.device), compute_forces=True, create_graph=False)
        energies = out["energy"].detach().cpu().double().numpy()
        forces = out["forces"].detach().cpu().double().numpy()
        ptr = graph.ptr.tolist()
        return energies, [forces[ptr[i] : ptr[i + 1]] for i in range(len(images))]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        (energy,), (forces,) = self.batch([self.atoms])
        self.results = {"energy": float(energy), "free_energy": float(energy), "forces": forces}
