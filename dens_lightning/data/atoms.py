"""ASE ``Atoms`` → a :class:`Graph` batch (positions in Å; cells and periodicity kept)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from .graph import Graph, collate
from .structures import Structures


def atoms_structures(images: Sequence[Atoms]) -> Structures:
    """ASE structures as :class:`Structures` (no labels). Non-finite positions (a diverged step) are
    refused: the neighbour list would leave such an atom out and the energy would stay finite."""
    if not all(np.isfinite(a.positions).all() for a in images):
        raise ValueError("non-finite atomic positions (NaN or infinite): a diverged simulation or step?")
    return Structures.from_frames(
        numbers=[a.numbers for a in images],
        positions=[a.positions for a in images],
        cells=[np.asarray(a.cell.array) for a in images],
        pbcs=[np.asarray(a.pbc) for a in images],
    )


def atoms_graph(images: Atoms | Sequence[Atoms], dtype: torch.dtype = torch.float32) -> Graph:
    """One structure or many as one batch, without a neighbour list."""
    images = [images] if isinstance(images, Atoms) else list(images)
    structures = atoms_structures(images)
    return collate([structures.graph(i, dtype) for i in range(len(images))])
