"""Dataset statistics stored with the model: per-element reference energies and an energy scale."""

from __future__ import annotations

import numpy as np

from .structures import Structures, StructureView

STATISTICS_SAMPLE = 20_000  # structures of a memory-mapped training set the statistics are fitted on


def element_counts(structures: Structures, elements: list[int]) -> np.ndarray:
    """[B, len(elements)] number of atoms of each element in each structure."""
    column = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    frame = np.repeat(np.arange(len(structures)), structures.num_atoms)
    np.add.at(counts, (frame, np.array([column[int(z)] for z in structures.z], dtype=np.int64)), 1.0)
    return counts


def reference_energies(structures: Structures, energy: np.ndarray | None = None) -> dict[int, float]:
    """Per-element energies (eV) minimising ``Σ (E - Σ_i e_{z_i})²`` over the structures; ``energy``
    [B] (eV) replaces the structures' own (e.g. the residuals of a model, to fit its references).

    With fewer distinct compositions than elements the problem is underdetermined; ``lstsq`` then
    returns the minimum-norm solution, which still removes the composition-dependent offset.
    """
    elements = structures.elements
    energy = structures.energy if energy is None else energy
    if energy is None:
        return dict.fromkeys(elements, 0.0)
    counts = element_counts(structures, elements)
    solution, *_ = np.linalg.lstsq(counts, np.asarray(energy, dtype=np.float64), rcond=None)
    return {z: float(e) for z, e in zip(elements, solution)}


def energy_scale(structures: Structures, references: dict[int, float]) -> float:
    """The RMS of the force components (eV/Å, read as eV per unit length of the network); without
    forces, the RMS per-atom energy residual after the references. Falls back to 1."""
    if structures.forces is not None and structures.forces.size:
        scale = float(np.sqrt(np.mean(structures.forces**2)))
    elif structures.energy is not None:
        fitted = element_counts(structures, list(references)) @ np.array(list(references.values()))
        scale = float(np.sqrt(np.mean(((structures.energy - fitted) / structures.num_atoms) ** 2)))
    else:
        scale = 1.0
    return scale if np.isfinite(scale) and scale > 1e-8 else 1.0


def statistics_sample(train: Structures | StructureView, seed: int) -> Structures:
    """The training structures the statistics are fitted on: all of them, or for a memory-mapped
    set a seeded sample of :data:`STATISTICS_SAMPLE` (every rank draws the same)."""
    if not isinstance(train, StructureView):
        return train
    indices = train.indices
    if len(indices) > STATISTICS_SAMPLE:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(indices, STATISTICS_SAMPLE, replace=False))
    return train.base.subset(indices)
