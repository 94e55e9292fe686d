"""Checks of structures beyond finite numbers (those are in :meth:`Structures.validate`): atoms too
close together, atoms with no neighbour within the cutoff, and energies that look like another unit.

Distances come from each atom's nearest neighbour: vectorised over the frames of one size for
molecules, through ASE's neighbour list (minimum image, any cell) for periodic structures.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase import units as ase_units
from ase.neighborlist import neighbor_list

from ..errors import InputError
from .structures import Structures

PAIRS_PER_CHUNK = 4_000_000  # distance matrix entries computed at once for molecules
THOMAS_FERMI = 0.7687 * ase_units.Hartree  # eV: a neutral atom's total energy is about -0.77 Z^(7/3) Ha


@dataclass
class Geometry:
    """``nearest`` [N atoms]: distance (Å) from each atom to its nearest neighbour within the radius
    asked for (``inf`` when there is none); ``frame_of_atom`` [N]."""

    nearest: np.ndarray
    frame_of_atom: np.ndarray


def pair_distances(
    structures: Structures, radius: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks ``(first, second, distance)`` of same-shaped arrays: the indices of two atoms of one
    structure and their distance (Å); every ordered pair of a molecule (``inf`` for an atom with
    itself), the minimum-image pairs within ``radius`` of a periodic structure."""
    ptr, counts = structures.ptr, np.diff(structures.ptr)
    periodic = structures.pbc.any(axis=1)
    for size in np.unique(counts[~periodic]):
        frames = np.flatnonzero((counts == size) & ~periodic)
        if size < 2:
            continue
        chunk = max(1, PAIRS_PER_CHUNK // (size * size))
        offsets = ptr[frames][:, None] + np.arange(size)
        for start in range(0, len(frames), chunk):
            atoms = offsets[start : start + chunk]
            pos = structures.pos[atoms]  # [F, n, 3]
            d = np.linalg.norm(pos[:, :, None, :] - pos[:, None, :, :], axis=-1)
            d[:, np.arange(size), np.arange(size)] = np.inf
            yield np.broadcast_to(atoms[:, :, None], d.shape), np.broadcast_to(atoms[:, None, :], d.shape), d
    for frame in np.flatnonzero(periodic):
        a, b = ptr[frame], ptr[frame + 1]
        atoms = Atoms(
            numbers=structures.z[a:b],
            positions=structures.pos[a:b],
            cell=structures.cell[frame],
            pbc=structures.pbc[frame],
        )
        i, j, d = neighbor_list("ijd", atoms, radius, self_interaction=False)
        yield a + i, a + j, d


def nearest_neighbors(structures: Structures, radius: float) -> Geometry:
    """The nearest-neighbour distance of every atom of ``structures``, up to ``radius`` (Å)."""
    nearest = np.full(len(structures.z), np.inf)
    for first, _, distance in pair_distances(structures, radius):
        if distance.ndim == 3:  # a block of molecules: each row holds all of an atom's partners
            nearest[first[:, :, 0]] = distance.min(axis=2)
        else:
            np.minimum.at(nearest, first, distance)
    nearest[nearest > radius] = np.inf
    frame_of_atom = np.repeat(np.arange(len(structures)), np.diff(structures.ptr))
    return Geometry(nearest, frame_of_atom)


def shortest_pair_distances(structures: Structures, radius: float) -> dict[tuple[int, int], float]:
    """The shortest distance (Å) of each element pair ``(Z_a, Z_b)``, ``Z_a <= Z_b``, over all
    structures, among the pairs closer than ``radius`` (Å)."""
    size = int(structures.z.max()) + 1 if len(structures.z) else 1
    shortest = np.full(size * size, np.inf)
    for first, second, distance in pair_distances(structures, radius):
        za, zb = structures.z[first], structures.z[second]
        pair = np.minimum(za, zb) * size + np.maximum(za, zb)
        np.minimum.at(shortest, pair.ravel(), distance.ravel())
    return {(int(p // size), int(p % size)): float(shortest[p]) for p in np.flatnonzero(shortest <= radius)}


def check_geometry(structures: Structures, cutoff: float, min_distance: float) -> int:
    """Refuse atoms closer than ``min_distance`` (Å), naming the first frame; warn about atoms with no
    neighbour within ``cutoff`` (Å), which the network sees alone (allowed). Returns how many there are."""
    geometry = nearest_neighbors(structures, max(cutoff, min_distance))
    close = geometry.nearest < min_distance
    if close.any():
        atom = int(np.argmax(close))
        frame = int(geometry.frame_of_atom[atom])
        raise InputError(
            f"{structures.source}: frame {frame}: atom {atom - int(structures.ptr[frame])} is "
            f"{geometry.nearest[atom]:.3f} Å from another atom, closer than "
            f"data.min_distance={min_distance} Å (overlapping atoms, or lengths in another unit: data.units)"
        )
    isolated = ~np.isfinite(geometry.nearest) | (geometry.nearest > cutoff)
    count = int(isolated.sum())
    if count:
        frames = np.unique(geometry.frame_of_atom[isolated])
        warnings.warn(
            f"{structures.source}: {count} atoms in {len(frames)} structures (first: frame {int(frames[0])}) "
            f"have no neighbour within the cutoff of {cutoff} Å; the network sees each of them alone",
            UserWarning,
            stacklevel=2,
        )
    return count


def likely_energy_unit(
    structures: Structures, declared: str, units: dict[str, float]
) -> tuple[str | None, float]:
    """``(unit, ratio)``: ``ratio`` is the median over structures of ``|E|`` (converted from
    ``declared`` to eV) over the total energy its atoms could have, the Thomas-Fermi estimate
    ``Σ 0.77 Z^(7/3)`` Ha. Above 5, ``unit`` is the one among ``units`` (name → eV) that brings the
    energies back under that bound; else None. Only an upper bound is checked: relative energies
    (small numbers) pass."""
    if structures.energy is None or len(structures) == 0:
        return None, 0.0
    bound = np.add.reduceat(THOMAS_FERMI * structures.z.astype(np.float64) ** (7 / 3), structures.ptr[:-1])
    ratio = float(np.median(np.abs(structures.energy) / bound))
    if ratio <= 5.0:
        return None, ratio
    plausible = {name: ratio * factor / units[declared] for name, factor in units.items()}
    plausible = {name: r for name, r in plausible.items() if r <= 1.5}
    return (max(plausible, key=plausible.get) if plausible else None), ratio


def warn_energy_unit(structures: Structures, declared: str, units: dict[str, float]) -> None:
    """Warn, naming the likely unit, when the energies look like another unit than ``declared``."""
    likely, ratio = likely_energy_unit(structures, declared, units)
    if likely is not None:
        warnings.warn(
            f"{structures.source}: read as {declared}, the energies are {ratio:.0f}x the total energy their "
            f"atoms can have; they look like {likely}: set data.units={likely!r} if so",
            UserWarning,
            stacklevel=2,
        )
