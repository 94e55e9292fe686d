"""A backbone plus an energy head: energies and conservative forces from a batch."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from ase import Atoms
from torch import Tensor, nn

from ..data.atoms import atoms_graph
from ..data.graph import Graph
from ..data.neighbors import with_neighbors
from .base import Backbone, build_backbone
from .heads import EnergyHead
from .repulsion import ZBLRepulsion, parse_reach


def strained(graph: Graph, displacement: Tensor) -> Graph:
    """``graph`` under the homogeneous deformation ``r -> r (1 + ε)`` of each structure, ``ε`` the
    symmetric part of ``displacement`` [B, 3, 3] (row vectors, as ``cell``): atoms and the
    periodic-image shifts of its edges move together, so derivatives in ``ε`` are strain derivatives."""
    symmetric = 0.5 * (displacement + displacement.transpose(1, 2))
    pos = graph.pos + torch.einsum("ni,nij->nj", graph.pos, symmetric[graph.batch])
    shift = graph.edge_shift
    if shift is not None:
        edge_structure = graph.batch[graph.edge_index[1]]
        shift = shift + torch.einsum("ei,eij->ej", shift, symmetric[edge_structure])
    return graph.replace(pos=pos, edge_shift=shift)


class Potential(nn.Module):
    """Energy (eV) and forces ``-dE/dpos`` (eV/Å) of every structure in a batch; on request the
    virial ``-dE/dε`` (eV), the strain derivative (a periodic cell's stress is ``-virial / V``).

    Every backbone sees geometry only through :func:`~dens_lightning.models.base.edge_vectors`
    (position differences plus periodic shifts), which is what makes the strain derivative right.

    With ``model.zbl`` the ZBL nuclear repulsion at short range is added to the energy
    (:mod:`.repulsion`).

    ``metadata`` describes the model for sharing (see :mod:`dens_lightning.artifacts`).
    """

    def __init__(
        self, backbone: Backbone, neighbor_backend: str = "auto", metadata: dict[str, Any] | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.energy_head = EnergyHead(backbone.num_features, backbone.config.max_z)
        config = backbone.config
        self.repulsion = None
        if config.zbl:
            reach = parse_reach(config.zbl_reach, config.cutoff)
            self.repulsion = ZBLRepulsion(config.max_z, config.zbl_switch, reach)
        self.neighbor_backend = neighbor_backend
        self.metadata: dict[str, Any] = dict(metadata or {})

    @classmethod
    def build(cls, name: str, hyperparameters: dict[str, Any], **kwargs) -> Potential:
        return cls(build_backbone(name, hyperparameters), **kwargs)

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def recompute_blocks(self, enabled: bool = True) -> Potential:
        """Force evaluations that keep no block's activations for the backward pass but recompute
        them there, one block at a time (:meth:`~dens_lightning.models.base.Backbone.run_block`):
        less memory for large systems, one more forward pass of compute. Returns ``self``."""
        self.backbone.recompute_blocks = enabled
        return self

    def prepare(self, graph: Graph) -> Graph:
        return with_neighbors(graph, self.cutoff, self.neighbor_backend)

    def forward(
        self,
        graph: Graph | Atoms | Sequence[Atoms],
        compute_forces: bool = True,
        create_graph: bool | None = None,
        node_inputs: dict[str, Tensor] | None = None,
        compute_virial: bool = False,
    ) -> dict[str, Tensor]:
        """Returns ``energy`` [B] and, with ``compute_forces``, ``forces`` [N, 3]; with
        ``compute_virial``, also ``virial`` [B, 3, 3]. ``graph``: a batch, or ASE ``Atoms`` (one or a list).
        ``create_graph`` (default: whether the module is training) keeps the force graph for a force
        loss."""
        if not isinstance(graph, Graph):
            weight = next(self.parameters())
            graph = atoms_graph(graph, weight.dtype).to(weight.device)
        if graph.z.numel() and int(graph.z.max()) > self.backbone.config.max_z:
            raise ValueError(
                f"atomic number {int(graph.z.max())} exceeds model.max_z={self.backbone.config.max_z}"
            )
        return self.evaluate(self.prepare(graph), compute_forces, create_graph, node_inputs, compute_virial)

    def evaluate(
        self,
        graph: Graph,
        compute_forces: bool = True,
        create_graph: bool | None = None,
        node_inputs: dict[str, Tensor] | None = None,
        compute_virial: bool = False,
    ) -> dict[str, Tensor]:
        """:meth:`forward` on a batch that has its neighbour list, without checks that read the data
        (so it traces with symbolic shapes, see :mod:`dens_lightning.export`)."""
        pos = graph.pos
        differentiate = compute_forces or compute_virial
        if differentiate and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
            graph = graph.replace(pos=pos)
        with torch.enable_grad() if differentiate else contextlib.nullcontext():
            inputs = [pos]
            if compute_virial:
                displacement = torch.zeros_like(graph.cell).requires_grad_(True)
                graph = strained(graph, displacement)
                inputs.append(displacement)
            features = self.backbone(graph, node_inputs)
            energy = self.energy_head(features, graph.z, graph.batch, graph.num_graphs)
            if self.repulsion is not None:
                energy = energy + self.repulsion(graph).to(energy.dtype)
            out = {"energy": energy, "features": features}
            if differentiate:
                keep = self.training if create_graph is None else create_graph
                grads = torch.autograd.grad(energy.sum(), inputs, create_graph=keep, retain_graph=keep)
                out["forces"] = -grads[0]
                if compute_virial:
                    out["virial"] = -grads[1]
                if not keep:  # the graph is spent: hand back plain tensors
                    out = {k: v.detach() if isinstance(v, Tensor) else v for k, v in out.items()}
        return out
