"""The batch container: many structures as one disjoint graph, and its collate."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Graph:
    """One or more structures, atoms concatenated (units: Å, eV).

    ``edge_index`` holds (source j, target i) pairs, and the vector from atom i to atom j is
    ``pos[j] - pos[i] + edge_shift``; both are ``None`` until a neighbour list is built. ``paired``:
    whether the list is in :mod:`~dens_lightning.data.neighbors`' paired order (each pair once, then
    the same pairs reversed), as every list built by ``neighbor_list`` is.
    """

    z: Tensor  # int64 [N]
    pos: Tensor  # [N, 3]
    batch: Tensor  # int64 [N]
    ptr: Tensor  # int64 [B + 1]
    cell: Tensor  # [B, 3, 3], rows are lattice vectors; zeros when not periodic
    pbc: Tensor  # bool [B, 3]
    energy: Tensor | None = None  # float64 [B]: totals need it (float32 resolves 2 meV at 17,000 eV)
    forces: Tensor | None = None  # [N, 3]
    fixed: Tensor | None = None  # bool [N]
    idx: Tensor | None = None  # int64 [B], index of each structure in its data set
    edge_index: Tensor | None = None  # int64 [2, E]
    edge_shift: Tensor | None = None  # [E, 3]
    paired: bool = False

    @property
    def num_graphs(self) -> int:
        return self.ptr.shape[0] - 1  # shape, not numel(): traces as a plain size

    @property
    def num_atoms(self) -> Tensor:
        """Atoms per structure, int64 [B]."""
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def periodic(self) -> bool:
        return bool(self.pbc.any())

    def replace(self, **changes) -> Graph:
        return dataclasses.replace(self, **changes)

    def with_positions(self, pos: Tensor) -> Graph:
        """The same structures at new positions; the neighbour list is dropped (it may be stale)."""
        return self.replace(pos=pos, edge_index=None, edge_shift=None, paired=False)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Graph:
        """Move to ``device``; floating-point fields but the energies take ``dtype`` when given."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                recast = dtype is not None and value.is_floating_point() and f.name != "energy"
                cast = dtype if recast else None
                changes[f.name] = value.to(device=device, dtype=cast)
        return self.replace(**changes)


def collate(graphs: list[Graph]) -> Graph:
    """Concatenate structures into one batch; neighbour lists are shifted by the atom offsets."""
    if len(graphs) == 1:
        return graphs[0]
    num_atoms = torch.cat([g.num_atoms for g in graphs])
    ptr = torch.zeros(num_atoms.numel() + 1, dtype=torch.long)
    torch.cumsum(num_atoms, 0, out=ptr[1:])
    batch = torch.repeat_interleave(torch.arange(num_atoms.numel()), num_atoms)
    atom_offsets = [0, *itertools.accumulate(g.z.numel() for g in graphs[:-1])]

    def cat(name: str) -> Tensor | None:
        values = [getattr(g, name) for g in graphs]
        if any(v is None for v in values):
            return None
        return torch.cat(values)

    edge_index = None
    edge_shift = None
    paired = all(g.paired for g in graphs)
    if all(g.edge_index is not None for g in graphs):
        indices = [g.edge_index + atom_offsets[k] for k, g in enumerate(graphs)]
        shifts = [g.edge_shift for g in graphs]
        if paired:  # every structure's pairs, then every structure's reversed pairs
            halves = [g.edge_shift.shape[0] // 2 for g in graphs]
            indices = [x[:, :h] for x, h in zip(indices, halves, strict=True)] + [
                x[:, h:] for x, h in zip(indices, halves, strict=True)
            ]
            shifts = [x[:h] for x, h in zip(shifts, halves, strict=True)] + [
                x[h:] for x, h in zip(shifts, halves, strict=True)
            ]
        edge_index = torch.cat(indices, dim=1)
        edge_shift = torch.cat(shifts)
    return Graph(
        z=torch.cat([g.z for g in graphs]),
        pos=torch.cat([g.pos for g in graphs]),
        batch=batch,
        ptr=ptr,
        cell=torch.cat([g.cell for g in graphs]),
        pbc=torch.cat([g.pbc for g in graphs]),
        energy=cat("energy"),
        forces=cat("forces"),
        fixed=cat("fixed"),
        idx=cat("idx"),
        edge_index=edge_index,
        edge_shift=edge_shift,
        paired=paired and edge_index is not None,
    )
