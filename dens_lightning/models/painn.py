"""PaiNN (Schütt, Unke, Gastegger, ICML 2021): polarizable atom interaction neural network.

Each atom carries scalar features ``s`` [N, F] and vector features ``v`` [N, 3, F]. A message block
mixes neighbour features through filters of the interatomic distance (sine radial basis × cosine
cutoff) and adds the unit edge direction to the vectors; an update block couples scalars and vectors
through norms and scalar products. Vectors are built from edge directions, so they are polar:
energies are invariant under rotations and reflections, vector outputs equivariant.
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
    both_directions,
    checked_node_inputs,
    cosine_cutoff,
    gather,
    pair_vectors,
    register_backbone,
    xavier_init,
)
from .encoders import VectorForceEncoder
from .heads import NoiseHead

NORM_EPS = 1e-8  # inside square roots, so the gradient of |v| is finite at v = 0


def vector_norm(v: Tensor) -> Tensor:
    """|v| over the Cartesian axis of [N, 3, F] vectors, differentiable at 0."""
    return torch.sqrt(v.pow(2).sum(dim=1) + NORM_EPS)


@dataclass
class PaiNNConfig(BackboneConfig):
    hidden_channels: int = 128  # width of scalar and vector features
    num_interactions: int = 3
    num_rbf: int = 20  # sine radial basis functions sin(nπd/r_c)/d


class SineRBF(nn.Module):
    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, num_rbf + 1) * torch.pi / cutoff)

    def forward(self, distance: Tensor) -> Tensor:
        d = distance[:, None]
        return torch.sin(self.frequencies * d) / d


class Message(nn.Module):
    def __init__(self, hidden: int, num_rbf: int):
        super().__init__()
        self.hidden = hidden
        self.scalar_net = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        self.filter = nn.Linear(num_rbf, 3 * hidden)

    def forward(
        self, s: Tensor, v: Tensor | None, rbf: Tensor, envelope: Tensor, unit: Tensor, graph: Graph
    ) -> tuple[Tensor, Tensor]:
        """``rbf`` and ``envelope`` per pair (:func:`pair_vectors`), ``unit`` per edge; ``v`` None while
        the vector features are still zero (the first message without force encoding)."""
        j, i = graph.edge_index
        filters = both_directions(graph, self.filter(rbf) * envelope[:, None])
        x = gather(self.scalar_net(s), j) * filters
        ds, dv_v, dv_r = torch.split(x, self.hidden, dim=-1)
        dv = unit[:, :, None] * dv_r[:, None, :]
        if v is not None:
            dv = dv + gather(v, j) * dv_v[:, None, :]
        s_out = torch.zeros_like(s).index_add(0, i, ds)
        v_out = s.new_zeros(s.shape[0], 3, s.shape[1]).index_add(0, i, dv)
        return s_out, v_out


class Update(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.u = nn.Linear(hidden, hidden, bias=False)
        self.w = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        uv, wv = self.u(v), self.w(v)
        a = self.mlp(torch.cat([s, vector_norm(wv)], dim=-1))
        a_vv, a_sv, a_ss = torch.split(a, self.hidden, dim=-1)
        dv = a_vv[:, None, :] * uv
        ds = a_sv * (uv * wv).sum(dim=1) + a_ss
        return ds, dv


class GatedEquivariantBlock(nn.Module):
    """Scalars and vectors → fewer scalars and vectors; vectors gated by scalars (PaiNN, Fig. 3)."""

    def __init__(self, hidden: int, out: int, scalar_activation: bool):
        super().__init__()
        self.out = out
        self.v1 = nn.Linear(hidden, out, bias=False)
        self.v2 = nn.Linear(hidden, hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2 * out))
        self.scalar_activation = nn.SiLU() if scalar_activation else nn.Identity()

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        x = self.mlp(torch.cat([s, vector_norm(self.v2(v))], dim=-1))
        s_out, gate = torch.split(x, self.out, dim=-1)
        return self.scalar_activation(s_out), gate[:, None, :] * self.v1(v)


def geometry(graph: Graph, rbf: SineRBF, cutoff: float) -> tuple[Tensor, Tensor, Tensor]:
    """Radial basis and cosine envelope per pair, unit vector from each atom to its neighbour per edge."""
    vec, distance = pair_vectors(graph)
    unit = both_directions(graph, vec / distance[:, None], -1.0)
    return rbf(distance), cosine_cutoff(distance, cutoff), unit


class PaiNNHeadBlock(nn.Module):
    """One more PaiNN interaction (message and update) on the backbone's features, for a noise head."""

    def __init__(self, config: PaiNNConfig):
        super().__init__()
        self.cutoff = config.cutoff
        self.rbf = SineRBF(config.num_rbf, config.cutoff)
        self.message = Message(config.hidden_channels, config.num_rbf)
        self.update = Update(config.hidden_channels)
        xavier_init(self)

    def forward(self, features: Features, graph: Graph) -> Features:
        rbf, envelope, unit = geometry(graph, self.rbf, self.cutoff)
        s, v = features.scalars, features.vectors
        s, v = interaction(self.message, self.update, s, v, rbf, envelope, unit, graph)
        return Features(scalars=s, vectors=v)


class PaiNNNoiseHead(NoiseHead):
    """Two gated equivariant blocks on PaiNN's features → one vector per atom: the predicted noise."""

    def __init__(self, hidden: int):
        super().__init__()
        half = max(hidden // 2, 1)
        self.blocks = nn.ModuleList(
            [GatedEquivariantBlock(hidden, half, True), GatedEquivariantBlock(half, 1, False)]
        )
        xavier_init(self)

    def readout(self, features: Features, graph) -> Tensor:
        s, v = features.scalars, features.vectors
        for block in self.blocks:
            s, v = block(s, v)
        return v[:, :, 0]


def interaction(
    message: Message,
    update: Update,
    s: Tensor,
    v: Tensor | None,
    rbf: Tensor,
    envelope: Tensor,
    unit: Tensor,
    graph: Graph,
) -> tuple[Tensor, Tensor]:
    """One message and one update block, each added to the features (residual)."""
    ds, dv = message(s, v, rbf, envelope, unit, graph)
    s, v = s + ds, dv if v is None else v + dv
    ds, dv = update(s, v)
    return s + ds, v + dv


@register_backbone
class PaiNN(Backbone):
    name = "painn"
    Config = PaiNNConfig

    def __init__(self, config: PaiNNConfig):
        super().__init__(config)
        hidden = config.hidden_channels
        self.embedding = nn.Embedding(config.max_z + 1, hidden, padding_idx=0)
        self.rbf = SineRBF(config.num_rbf, config.cutoff)
        self.messages = nn.ModuleList(Message(hidden, config.num_rbf) for _ in range(config.num_interactions))
        self.updates = nn.ModuleList(Update(hidden) for _ in range(config.num_interactions))
        xavier_init(self)

    @property
    def num_features(self) -> int:
        return self.config.hidden_channels

    def parts(self) -> dict[str, nn.Module]:
        blocks = {f"block{k}": nn.ModuleList(pair) for k, pair in enumerate(zip(self.messages, self.updates))}
        return {"embedding": self.embedding} | blocks

    def make_noise_head(self) -> nn.Module:
        return PaiNNNoiseHead(self.config.hidden_channels)

    def make_head_block(self) -> nn.Module:
        return PaiNNHeadBlock(self.config)

    def make_force_encoder(self) -> nn.Module:
        return VectorForceEncoder(self.config.hidden_channels)

    def forward(self, graph: Graph, node_inputs: dict[str, Tensor] | None = None) -> Features:
        rbf, envelope, unit = geometry(graph, self.rbf, self.cutoff)
        s = self.embedding(graph.z)
        v = None  # zero until the first message: skipped in it
        if node_inputs:  # DeNS force encoding: added to the initial scalar and vector features
            n, width = s.shape
            shapes = {"scalars": (n, width), "vectors": (n, 3, width)}
            node_inputs = checked_node_inputs(self.name, node_inputs, shapes)
            s = s + node_inputs.get("scalars", 0.0)
            v = node_inputs.get("vectors")
        for message, update in zip(self.messages, self.updates):
            s, v = self.run_block(interaction, message, update, s, v, rbf, envelope, unit, graph)
        if v is None:  # no interactions
            v = s.new_zeros(s.shape[0], 3, s.shape[1])
        return Features(scalars=s, vectors=v)
