"""SchNet (Schütt et al., J. Chem. Phys. 148, 241722, 2018).

Continuous-filter convolutions: a filter generated from the interatomic distance, expanded in
Gaussians and damped by a cosine cutoff, multiplies the neighbour features; shifted-softplus MLPs;
residual interaction blocks. Invariant: produces scalar features only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.graph import Graph
from .base import (
    Backbone,
    BackboneConfig,
    Features,
    GaussianRBF,
    ShiftedSoftplus,
    both_directions,
    checked_node_inputs,
    cosine_cutoff,
    gather,
    pair_vectors,
    register_backbone,
    xavier_init,
)
from .encoders import EdgeProjectionForceEncoder


@dataclass
class SchNetConfig(BackboneConfig):
    hidden_channels: int = 128  # width of atom features
    num_filters: int = 128  # width of the continuous filters
    num_interactions: int = 3
    num_rbf: int = 20  # Gaussians between 0 and the cutoff


class Interaction(nn.Module):
    """One continuous-filter convolution block; returns the residual update."""

    def __init__(self, hidden: int, filters: int, num_rbf: int):
        super().__init__()
        self.filter_net = nn.Sequential(
            nn.Linear(num_rbf, filters), ShiftedSoftplus(), nn.Linear(filters, filters)
        )
        self.in_to_filter = nn.Linear(hidden, filters, bias=False)
        self.filter_to_out = nn.Sequential(
            nn.Linear(filters, hidden), ShiftedSoftplus(), nn.Linear(hidden, hidden)
        )

    def forward(self, x: Tensor, rbf: Tensor, envelope: Tensor, graph: Graph) -> Tensor:
        """``rbf`` and ``envelope`` per pair (:func:`pair_vectors`)."""
        j, i = graph.edge_index
        weights = both_directions(graph, self.filter_net(rbf) * envelope[:, None])
        messages = gather(self.in_to_filter(x), j) * weights
        aggregated = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype, device=x.device)
        aggregated.index_add_(0, i, messages)
        return self.filter_to_out(aggregated)


class SchNetHeadBlock(nn.Module):
    """One more interaction block on SchNet's features, for a noise head (its own filters)."""

    def __init__(self, config: SchNetConfig):
        super().__init__()
        self.cutoff = config.cutoff
        self.rbf = GaussianRBF(config.num_rbf, config.cutoff)
        self.interaction = Interaction(config.hidden_channels, config.num_filters, config.num_rbf)
        xavier_init(self)

    def forward(self, features: Features, graph: Graph) -> Features:
        _, distance = pair_vectors(graph)
        x = features.scalars
        x = x + self.interaction(x, self.rbf(distance), cosine_cutoff(distance, self.cutoff), graph)
        return Features(scalars=x)


@register_backbone
class SchNet(Backbone):
    name = "schnet"
    Config = SchNetConfig

    def __init__(self, config: SchNetConfig):
        super().__init__(config)
        self.embedding = nn.Embedding(config.max_z + 1, config.hidden_channels, padding_idx=0)
        self.rbf = GaussianRBF(config.num_rbf, config.cutoff)
        self.interactions = nn.ModuleList(
            Interaction(config.hidden_channels, config.num_filters, config.num_rbf)
            for _ in range(config.num_interactions)
        )
        xavier_init(self)

    @property
    def num_features(self) -> int:
        return self.config.hidden_channels

    def parts(self) -> dict[str, nn.Module]:
        return {"embedding": self.embedding} | {f"block{k}": b for k, b in enumerate(self.interactions)}

    def make_head_block(self) -> nn.Module:
        return SchNetHeadBlock(self.config)

    def make_force_encoder(self) -> nn.Module:
        return EdgeProjectionForceEncoder(self.config.hidden_channels, self.config.cutoff)

    def forward(self, graph: Graph, node_inputs: dict[str, Tensor] | None = None) -> Features:
        _, distance = pair_vectors(graph)
        rbf = self.rbf(distance)
        envelope = cosine_cutoff(distance, self.cutoff)
        x = self.embedding(graph.z)
        if node_inputs:  # DeNS force encoding (invariant edge projections): added to the embedding
            shapes = {"scalars": tuple(x.shape)}
            x = x + checked_node_inputs(self.name, node_inputs, shapes)["scalars"]
        for interaction in self.interactions:
            x = x + self.run_block(interaction, x, rbf, envelope, graph)
        return Features(scalars=x)
