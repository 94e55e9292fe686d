"""A backbone plus an energy head: energies and conservative forces from a batch."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from ..data.graph import Graph
from ..data.neighbors import neighbor_list
from .base import Backbone, build_backbone
from .heads import EnergyHead


def with_neighbors(graph: Graph, cutoff: float, backend: str = "auto") -> Graph:
    """``graph`` with its radius graph built, unless it already has one."""
    if graph.edge_index is not None:
        return graph
    edge_index, edge_shift = neighbor_list(graph.pos, graph.ptr, cutoff, graph.cell, graph.pbc, backend)
    return graph.replace(edge_index=edge_index, edge_shift=edge_shift)


class Potential(nn.Module):
    """Energy (eV) and forces ``-dE/dpos`` (eV/Å) of every structure in a batch.

    ``metadata`` describes the model for sharing (see :mod:`dens_lightning.artifacts`).
    """

    def __init__(
        self, backbone: Backbone, neighbor_backend: str = "auto", metadata: dict[str, Any] | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.energy_head = EnergyHead(backbone.num_features, backbone.config.max_z)
        self.neighbor_backend = neighbor_backend
        self.metadata: dict[str, Any] = dict(metadata or {})

    @classmethod
    def build(cls, name: str, hyperparameters: dict[str, Any], **kwargs) -> Potential:
        return cls(build_backbone(name, hyperparameters), **kwargs)

    @property
    def cutoff(self) -> float:
        return self.backbone.cutoff

    def prepare(self, graph: Graph) -> Graph:
        return with_neighbors(graph, self.cutoff, self.neighbor_backend)

    def forward(
        self,
        graph: Graph,
        compute_forces: bool = True,
        create_graph: bool | None = None,
        node_inputs: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Returns ``energy`` [B] and, with ``compute_forces``, ``forces`` [N, 3]. ``create_graph``
        (default: whether the module is training) keeps the force graph for a force loss."""
        if graph.z.numel() and int(graph.z.max()) > self.backbone.config.max_z:
            raise ValueError(
                f"atomic number {int(graph.z.max())} exceeds model.max_z={self.backbone.config.max_z}"
            )
        graph = self.prepare(graph)
        pos = graph.pos
        if compute_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
            graph = graph.replace(pos=pos)
        with torch.enable_grad() if compute_forces else contextlib.nullcontext():
            features = self.backbone(graph, node_inputs)
            energy = self.energy_head(features, graph.z, graph.batch, graph.num_graphs)
            out = {"energy": energy, "features": features}
            if compute_forces:
                keep = self.training if create_graph is None else create_graph
                (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=keep, retain_graph=keep)
                out["forces"] = -grad
        return out
