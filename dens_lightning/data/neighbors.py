"""Radius graphs behind one function, with interchangeable backends.

Every backend returns the full list (both directions) as ``edge_index = (j, i)`` and the Cartesian
shift such that the vector from i to j is ``pos[j] - pos[i] + shift``, *paired*: the first half holds
each pair once and the second half the same pairs reversed, in the same order (edge ``e + E/2`` is
edge ``e`` with j and i swapped and the shift negated). Backbones use this to compute what depends on
the distance alone once per pair (:func:`dens_lightning.models.base.pair_vectors`).

Backends (DESIGN section 4 has the measurements behind the default):
- ``cdist``: padded, batched ``torch.cdist``; molecules only; fastest for small molecules on CPU.
- ``vesin``: cell lists, one structure at a time on the CPU; periodic and not; the general case.
- ``torch_cluster``: ``radius_graph`` where the optional extra is installed; molecules only.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch
from torch import Tensor

from .graph import Graph

BACKENDS = ("auto", "cdist", "vesin", "torch_cluster")
CDIST_MAX_ATOMS = 256  # beyond this per structure, the padded distance matrix costs more than cell lists


def has_torch_cluster() -> bool:
    return importlib.util.find_spec("torch_cluster") is not None


def neighbor_list(
    pos: Tensor,
    ptr: Tensor,
    cutoff: float,
    cell: Tensor | None = None,
    pbc: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """All pairs closer than ``cutoff`` (Å) within each structure of a batch.

    ``ptr`` [B + 1] delimits the structures; ``cell`` [B, 3, 3] and ``pbc`` [B, 3] describe
    periodic cells (None or all-False for molecules). Returns ``edge_index`` [2, E] and
    ``edge_shift`` [E, 3] on the device and dtype of ``pos``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"neighbor backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    pos = pos.detach()
    periodic = pbc is not None and bool(pbc.any())
    if backend == "auto":
        max_atoms = int((ptr[1:] - ptr[:-1]).max()) if ptr.numel() > 1 else 0
        if periodic or max_atoms > CDIST_MAX_ATOMS:
            backend = "vesin"
        elif pos.is_cuda and has_torch_cluster():
            backend = "torch_cluster"
        else:
            backend = "cdist"
    if periodic and backend != "vesin":
        raise ValueError(
            f"neighbor backend {backend!r} handles molecules only; use 'vesin' for periodic cells"
        )
    if backend == "cdist":
        return _cdist(pos, ptr, cutoff)
    if backend == "torch_cluster":
        return _torch_cluster(pos, ptr, cutoff)
    return _vesin(pos, ptr, cutoff, cell, pbc)


def with_neighbors(graph: Graph, cutoff: float, backend: str = "auto") -> Graph:
    """``graph`` with its (paired) radius graph built, unless it already has one."""
    if graph.edge_index is not None:
        return graph
    edge_index, edge_shift = neighbor_list(graph.pos, graph.ptr, cutoff, graph.cell, graph.pbc, backend)
    return graph.replace(edge_index=edge_index, edge_shift=edge_shift, paired=True)


def _empty(pos: Tensor) -> tuple[Tensor, Tensor]:
    return torch.zeros(2, 0, dtype=torch.long, device=pos.device), pos.new_zeros(0, 3)


def _cdist(pos: Tensor, ptr: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    sizes = ptr[1:] - ptr[:-1]
    n_struct = sizes.numel()
    if n_struct == 0 or pos.shape[0] == 0:
        return _empty(pos)
    if n_struct == 1:  # one structure (the ASE calculator's case): no padding
        mask = (torch.cdist(pos[None], pos[None])[0] < cutoff).triu_(1)  # i < j: each pair once
        i, j = mask.nonzero(as_tuple=True)
        return paired(torch.stack([j, i]), pos.new_zeros(i.shape[0], 3))
    max_atoms = int(sizes.max())
    batch = torch.repeat_interleave(torch.arange(n_struct, device=pos.device), sizes.to(pos.device))
    local = torch.arange(pos.shape[0], device=pos.device) - ptr.to(pos.device)[batch]
    padded = pos.new_zeros((n_struct, max_atoms, 3))
    padded[batch, local] = pos
    dist = torch.cdist(padded, padded)
    valid = torch.zeros(n_struct, max_atoms, dtype=torch.bool, device=pos.device)
    valid[batch, local] = True
    mask = (dist < cutoff) & valid[:, :, None] & valid[:, None, :]
    mask &= torch.ones(max_atoms, max_atoms, dtype=torch.bool, device=pos.device).triu(1)  # i < j: once
    s, i, j = mask.nonzero(as_tuple=True)
    offset = ptr.to(pos.device)[s]
    return paired(torch.stack([j + offset, i + offset]), pos.new_zeros(s.shape[0], 3))


def paired(half_index: Tensor, half_shift: Tensor) -> tuple[Tensor, Tensor]:
    """The full list from each pair once: the pairs, then the same pairs reversed (see the module
    docstring)."""
    return torch.cat([half_index, half_index.flip(0)], dim=1), torch.cat([half_shift, -half_shift])


def _torch_cluster(pos: Tensor, ptr: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    from torch_cluster import radius_graph

    sizes = ptr[1:] - ptr[:-1]
    batch = torch.repeat_interleave(torch.arange(sizes.numel(), device=pos.device), sizes.to(pos.device))
    # never the default max_num_neighbors=32: it silently drops pairs in molecules of 50+ atoms
    edge_index = radius_graph(pos, r=cutoff, batch=batch, loop=False, max_num_neighbors=int(sizes.max()))
    once = edge_index[:, edge_index[0] > edge_index[1]]
    return paired(once, pos.new_zeros(once.shape[1], 3))


def _vesin(pos: Tensor, ptr: Tensor, cutoff: float, cell: Tensor | None, pbc: Tensor | None):
    from vesin import NeighborList

    calculator = NeighborList(cutoff=float(cutoff), full_list=False)  # each pair once
    pos_np = pos.cpu().double().numpy()
    ptr_np = ptr.cpu().numpy()
    cell_np = cell.cpu().double().numpy() if cell is not None else None
    pbc_np = pbc.cpu().numpy() if pbc is not None else None
    sources, targets, shifts = [], [], []
    for s in range(len(ptr_np) - 1):
        start, stop = int(ptr_np[s]), int(ptr_np[s + 1])
        if stop == start:
            continue
        periodic = pbc_np[s] if pbc_np is not None else np.zeros(3, dtype=bool)
        box = cell_np[s] if (cell_np is not None and periodic.any()) else np.zeros((3, 3))
        i, j, shift = calculator.compute(
            pos_np[start:stop], box, [bool(p) for p in periodic], quantities="ijS"
        )
        sources.append(j.astype(np.int64) + start)
        targets.append(i.astype(np.int64) + start)
        shifts.append(shift.astype(np.float64) @ box)
    if not sources:
        return _empty(pos)
    edge_index = torch.from_numpy(np.stack([np.concatenate(sources), np.concatenate(targets)]))
    edge_shift = torch.from_numpy(np.concatenate(shifts))
    return paired(edge_index.to(pos.device), edge_shift.to(device=pos.device, dtype=pos.dtype))
