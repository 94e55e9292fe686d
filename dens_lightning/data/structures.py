"""A set of structures stored column-wise (atoms concatenated), in Å and eV."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from .graph import Graph


@dataclass
class Structures:
    """Structures with their labels; ``ptr`` [B + 1] delimits each structure's atoms.

    ``units`` records the units of the file the structures came from (they are always stored
    here in eV and Å); ``source`` names that file.
    """

    z: np.ndarray  # int64 [N]
    pos: np.ndarray  # float64 [N, 3], Å
    ptr: np.ndarray  # int64 [B + 1]
    cell: np.ndarray  # float64 [B, 3, 3], Å
    pbc: np.ndarray  # bool [B, 3]
    energy: np.ndarray | None = None  # float64 [B], eV
    forces: np.ndarray | None = None  # float64 [N, 3], eV/Å
    fixed: np.ndarray | None = None  # bool [N]
    source: str = "<memory>"
    units: dict = field(default_factory=lambda: {"energy": "eV", "length": "Å"})

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        return np.diff(self.ptr)

    @property
    def elements(self) -> list[int]:
        return sorted(int(x) for x in np.unique(self.z))

    @classmethod
    def from_frames(
        cls,
        numbers: list[np.ndarray],
        positions: list[np.ndarray],
        energies: list[float] | None = None,
        forces: list[np.ndarray] | None = None,
        cells: list[np.ndarray] | None = None,
        pbcs: list[np.ndarray] | None = None,
        fixed: list[np.ndarray] | None = None,
        source: str = "<memory>",
        units: dict | None = None,
    ) -> Structures:
        sizes = np.array([len(n) for n in numbers], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        count = len(numbers)

        def cat(arrays, dtype, shape):
            return (
                np.concatenate([np.asarray(a, dtype=dtype).reshape(shape) for a in arrays])
                if count
                else (np.zeros((0,) + shape[1:], dtype=dtype))
            )

        return cls(
            z=cat(numbers, np.int64, (-1,)),
            pos=cat(positions, np.float64, (-1, 3)),
            ptr=ptr,
            cell=np.stack([np.asarray(c, dtype=np.float64) for c in cells])
            if cells
            else np.zeros((count, 3, 3)),
            pbc=np.stack([np.asarray(p, dtype=bool) for p in pbcs]) if pbcs else np.zeros((count, 3), bool),
            energy=np.asarray(energies, dtype=np.float64) if energies is not None else None,
            forces=cat(forces, np.float64, (-1, 3)) if forces is not None else None,
            fixed=cat(fixed, bool, (-1,)) if fixed is not None else None,
            source=source,
            units=units or {"energy": "eV", "length": "Å"},
        )

    def subset(self, indices) -> Structures:
        """The structures at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        atom_idx = (
            np.concatenate([np.arange(self.ptr[i], self.ptr[i + 1]) for i in indices])
            if len(indices)
            else (np.zeros(0, dtype=np.int64))
        )
        sizes = self.num_atoms[indices]
        return Structures(
            z=self.z[atom_idx],
            pos=self.pos[atom_idx],
            ptr=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            cell=self.cell[indices],
            pbc=self.pbc[indices],
            energy=self.energy[indices] if self.energy is not None else None,
            forces=self.forces[atom_idx] if self.forces is not None else None,
            fixed=self.fixed[atom_idx] if self.fixed is not None else None,
            source=self.source,
            units=dict(self.units),
        )

    def graph(self, i: int, dtype: torch.dtype = torch.float32) -> Graph:
        """Structure ``i`` as a one-structure :class:`Graph` (no neighbour list yet)."""
        start, stop = int(self.ptr[i]), int(self.ptr[i + 1])
        n = stop - start
        return Graph(
            z=torch.from_numpy(
                np.array(self.z[start:stop], dtype=np.int64)
            ),  # a copy: z may be memory-mapped
            pos=torch.tensor(np.asarray(self.pos[start:stop]), dtype=dtype),
            batch=torch.zeros(n, dtype=torch.long),
            ptr=torch.tensor([0, n], dtype=torch.long),
            cell=torch.tensor(np.array(self.cell[i : i + 1]), dtype=dtype),
            pbc=torch.from_numpy(np.array(self.pbc[i : i + 1], dtype=bool)),
            energy=torch.tensor([self.energy[i]], dtype=torch.float64) if self.energy is not None else None,
            forces=torch.tensor(np.asarray(self.forces[start:stop]), dtype=dtype)
            if self.forces is not None
            else None,
            fixed=torch.from_numpy(self.fixed[start:stop]) if self.fixed is not None else None,
            idx=torch.tensor([i], dtype=torch.long),
        )

    def view(self, indices) -> StructureView:
        """The structures at ``indices`` without copying them (for memory-mapped sets)."""
        return StructureView(self, np.asarray(indices, dtype=np.int64))

    def validate(self) -> Structures:
        """Raise :class:`InputError` naming the file and first frame with a non-finite value."""
        if len(self) == 0:
            raise InputError(f"{self.source}: no structures found")
        frame_of_atom = np.repeat(np.arange(len(self)), self.num_atoms)
        checks = [("positions", self.pos, frame_of_atom), ("cell", self.cell, np.arange(len(self)))]
        if self.energy is not None:
            checks.append(("energy", self.energy, np.arange(len(self))))
        if self.forces is not None:
            checks.append(("forces", self.forces, frame_of_atom))
        for name, values, frames in checks:
            bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if bad.any():
                frame = int(frames[np.argmax(bad)])
                raise InputError(f"{self.source}: frame {frame}: non-finite {name} (NaN or inf)")
        if (self.num_atoms == 0).any():
            frame = int(np.argmax(self.num_atoms == 0))
            raise InputError(f"{self.source}: frame {frame}: structure has no atoms")
        if (self.z < 1).any():
            frame = int(frame_of_atom[np.argmax(self.z < 1)])
            raise InputError(f"{self.source}: frame {frame}: atomic number below 1")
        return self


def concatenate(parts: list[Structures]) -> Structures:
    """Several sets as one (labels kept only where every part has them)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.ptr[-1] for p in parts[:-1]])
    has = {name: all(getattr(p, name) is not None for p in parts) for name in ("energy", "forces", "fixed")}
    return Structures(
        z=np.concatenate([p.z for p in parts]),
        pos=np.concatenate([p.pos for p in parts]),
        ptr=np.concatenate([[0]] + [p.ptr[1:] + o for p, o in zip(parts, offsets)]).astype(np.int64),
        cell=np.concatenate([p.cell for p in parts]),
        pbc=np.concatenate([p.pbc for p in parts]),
        energy=np.concatenate([p.energy for p in parts]) if has["energy"] else None,
        forces=np.concatenate([p.forces for p in parts]) if has["forces"] else None,
        fixed=np.concatenate([p.fixed for p in parts]) if has["fixed"] else None,
        source=", ".join(p.source for p in parts),
        units=dict(parts[0].units),
    )


@dataclass
class StructureView:
    """Some structures of a (possibly memory-mapped) set, by index; nothing is copied until read."""

    base: Structures
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def source(self) -> str:
        return self.base.source

    @property
    def z(self) -> np.ndarray:
        """Atomic numbers of the whole underlying set (for range checks)."""
        return self.base.z

    @property
    def elements(self) -> list[int]:
        return self.base.elements

    def graph(self, i: int, dtype: torch.dtype = torch.float32) -> Graph:
        return self.base.graph(int(self.indices[i]), dtype)
