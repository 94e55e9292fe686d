"""Equiformer-style equivariant graph-attention transformer (Liao & Smidt, ICLR 2023), on e3nn.

Every atom carries ``C`` channels of each degree ``l <= lmax`` with natural parity (degree l with
parity (-1)^l: ``C x 0e + C x 1o + C x 2e + ...``), so the network is E(3)-equivariant: energies,
built from the ``0e`` part, are invariant under rotations and reflections; the ``1o`` part rotates
and reflects as a vector. The blocks follow the paper:

- embedding: atom-type scalars plus an *edge-degree embedding* (spherical harmonics of the edge
  directions weighted by a radial network and the neighbour's type, summed over neighbours);
- ``num_layers`` transformer blocks, each ``x + attention(norm(x))`` then ``x + ffn(norm(x))``,
  with an equivariant layer norm;
- equivariant graph attention: message ``x_ij = W_src x_j + W_dst x_i``, a depthwise tensor product
  with the edge's spherical harmonics whose weights (one per path and channel) come from a radial
  network, then split into attention scalars (MLP attention: LeakyReLU, one dot product per head)
  and gated values;
- feed-forward: per-degree linear, gate activation, per-degree linear.

Three changes from the paper:

- Smooth energies: the attention softmax runs over the neighbours *and a null neighbour of logit 0*,
  and each neighbour's weight is multiplied by the cosine cutoff envelope, so an atom entering the
  cutoff sphere enters with zero weight instead of a jump.
- The layer norm is taken over all degrees together (as in EquiformerV2), not per degree, so the
  small l > 0 features of an atom whose only neighbour sits at the cutoff are not blown up.
- The paths of the depthwise tensor product into the same output degree are summed with their
  learned per-edge weights instead of kept apart and mixed by a linear layer.

Layout: features are one tensor ``[N, (lmax+1)^2, C]``, the dense irreps layout of
:mod:`dens_lightning.models.irreps`, which holds the layers written for it (per-degree linear, layer
norm, gate, depthwise tensor product).

Per-atom inputs (DeNS force encoding) arrive as ``node_inputs["irreps"]``, a tensor in this layout,
added to the initial embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from e3nn import o3
from torch import Tensor, nn

from ..data.graph import Graph
from .base import (
    Backbone,
    BackboneConfig,
    Features,
    GaussianRBF,
    both_directions,
    checked_node_inputs,
    cosine_cutoff,
    degree_of_row,
    gather,
    pair_vectors,
    register_backbone,
)
from .encoders import IrrepsForceEncoder
from .heads import NoiseHead
from .irreps import (
    DegreeLinear,
    DepthwiseTensorProduct,
    EquivariantLayerNorm,
    gate,
    irreps_features,
    radial_mlp,
)

NODE_INPUT_KEY = "irreps"


@dataclass
class EquiformerConfig(BackboneConfig):
    lmax: int = 2  # highest degree of the features and spherical harmonics
    num_channels: int = 32  # channels of every degree l <= lmax
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads; num_channels must divide by it
    attention_channels: int = 8  # scalars per head that make its attention logit
    num_rbf: int = 32  # Gaussians between 0 and the cutoff
    radial_hidden: int = 64  # width of the radial networks
    ffn_channels: int = 64  # channels of every degree inside the feed-forward block
    avg_neighbors: float = 16.0  # divides the edge-degree embedding sum (a normalisation constant)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lmax < 1:
            raise ValueError(
                f"model.lmax must be at least 1 (the noise head needs a 1o vector), got {self.lmax}"
            )
        if self.num_channels % self.num_heads:
            raise ValueError(
                f"model.num_channels={self.num_channels} must be divisible by "
                f"model.num_heads={self.num_heads}"
            )
        if self.avg_neighbors <= 0:
            raise ValueError(f"model.avg_neighbors must be positive, got {self.avg_neighbors}")


def per_channel(attention: Tensor, channels: int) -> Tensor:
    """Per-head weights [E, H] spread to the heads' channels [E, C], contiguous blocks of C / H.
    A copy of an expanded view: multiplying by it broadcasts along a non-innermost axis only."""
    num_edges, num_heads = attention.shape
    spread = attention[:, :, None].expand(num_edges, num_heads, channels // num_heads)
    return spread.reshape(num_edges, channels)


def envelope_softmax(logits: Tensor, envelope: Tensor, target: Tensor, num_nodes: int) -> Tensor:
    """Attention weights [E, H]: ``env_ij exp(a_ij) / (1 + sum_k env_ik exp(a_ik))`` over the
    neighbours j of each target i, i.e. a softmax with a null neighbour of logit 0. Continuous as an
    edge's envelope goes to zero at the cutoff; the weights of an atom sum to less than one."""
    index = target[:, None].expand_as(logits)
    peak = logits.new_zeros(num_nodes, logits.shape[1])
    peak = peak.scatter_reduce(0, index, logits, reduce="amax", include_self=True).detach()
    weighted = torch.exp(logits - gather(peak, target)) * envelope[:, None]
    denominator = torch.exp(-peak).index_add(0, target, weighted)
    return weighted / gather(denominator, target)


class GraphAttention(nn.Module):
    """Equivariant graph attention with MLP attention and gated values (Equiformer, section 3.3)."""

    def __init__(self, config: EquiformerConfig):
        super().__init__()
        lmax, channels = config.lmax, config.num_channels
        self.num_heads, self.attention_channels = config.num_heads, config.attention_channels
        self.lmax = lmax
        self.source = DegreeLinear(lmax, channels, channels)
        self.target = DegreeLinear(lmax, channels, channels, bias=True)
        self.product = DepthwiseTensorProduct(lmax)
        self.radial = radial_mlp(config.num_rbf, config.radial_hidden, self.product.num_paths * channels)
        self.values = DegreeLinear(lmax, channels, channels, bias=True)
        # from the scalars of the product: attention logits' inputs and one gate per l > 0 channel
        self.scores_and_gates = nn.Linear(
            channels, self.num_heads * self.attention_channels + lmax * channels
        )
        self.attention_vector = nn.Parameter(
            torch.randn(self.num_heads, self.attention_channels) / math.sqrt(self.attention_channels)
        )
        self.output = DegreeLinear(lmax, channels, channels, bias=True)

    def forward(self, x: Tensor, sh: Tensor, rbf: Tensor, envelope: Tensor, graph: Graph) -> Tensor:
        """``sh`` and ``envelope`` per edge, ``rbf`` per pair (:func:`pair_vectors`)."""
        j, i = graph.edge_index
        pair = gather(self.source(x), j) + gather(self.target(x), i)
        weights = both_directions(graph, self.radial(rbf)).view(
            j.shape[0], self.product.num_paths, x.shape[2]
        )
        mixed = self.product(pair, sh, weights)
        split = self.num_heads * self.attention_channels
        scalars = torch.split(mixed, [1, mixed.shape[1] - 1], dim=1)[0].squeeze(1)
        scores, gates = torch.split(
            self.scores_and_gates(scalars), [split, self.lmax * mixed.shape[2]], dim=1
        )
        scores = nn.functional.leaky_relu(scores, 0.2).view(-1, self.num_heads, self.attention_channels)
        attention = envelope_softmax((scores * self.attention_vector).sum(-1), envelope, i, x.shape[0])
        gates = gates.view(mixed.shape[0], self.lmax, mixed.shape[2])
        values = gate(self.values(mixed), gates)
        messages = values * per_channel(attention, values.shape[2])[:, None, :]
        return self.output(torch.zeros_like(x).index_add(0, i, messages))


class FeedForward(nn.Module):
    """Per-degree linear to ``ffn_channels``, gate activation, per-degree linear back."""

    def __init__(self, config: EquiformerConfig):
        super().__init__()
        lmax, hidden = config.lmax, config.ffn_channels
        self.lmax, self.hidden = lmax, hidden
        self.expand = DegreeLinear(lmax, config.num_channels, hidden, bias=True)
        self.gates = nn.Linear(config.num_channels, lmax * hidden)
        self.contract = DegreeLinear(lmax, hidden, config.num_channels)

    def forward(self, x: Tensor) -> Tensor:
        gates = self.gates(x[:, 0]).view(x.shape[0], self.lmax, self.hidden)
        return self.contract(gate(self.expand(x), gates))


class TransformerBlock(nn.Module):
    def __init__(self, config: EquiformerConfig):
        super().__init__()
        self.norm_attention = EquivariantLayerNorm(config.lmax, config.num_channels)
        self.attention = GraphAttention(config)
        self.norm_ffn = EquivariantLayerNorm(config.lmax, config.num_channels)
        self.ffn = FeedForward(config)

    def forward(self, x: Tensor, sh: Tensor, rbf: Tensor, envelope: Tensor, graph: Graph) -> Tensor:
        x = x + self.attention(self.norm_attention(x), sh, rbf, envelope, graph)
        return x + self.ffn(self.norm_ffn(x))


class EdgeDegreeEmbedding(nn.Module):
    """Initial features from the neighbourhood: ``sum_j R_l(d_ij) e_l(z_j) Y^l(r_ij) / avg_neighbors``
    with one radial weight per degree and channel, damped by the cutoff envelope."""

    def __init__(self, config: EquiformerConfig):
        super().__init__()
        self.channels, self.lmax = config.num_channels, config.lmax
        size = config.num_channels * (config.lmax + 1)
        self.radial = radial_mlp(config.num_rbf, config.radial_hidden, size)
        self.neighbor_type = nn.Embedding(config.max_z + 1, size)
        self.norm = 1.0 / config.avg_neighbors
        self.register_buffer("rows", degree_of_row(config.lmax), persistent=False)

    def forward(self, z: Tensor, sh: Tensor, rbf: Tensor, envelope: Tensor, graph: Graph) -> Tensor:
        """``sh`` per edge, ``rbf`` and ``envelope`` per pair (:func:`pair_vectors`)."""
        j, i = graph.edge_index
        radial = both_directions(graph, self.radial(rbf) * (envelope[:, None] * self.norm))
        weights = radial * self.neighbor_type(gather(z, j))
        edges = weights.view(weights.shape[0], self.lmax + 1, self.channels).index_select(1, self.rows)
        edges = edges * sh[:, :, None]
        return edges.new_zeros(z.shape[0], *edges.shape[1:]).index_add(0, i, edges)


class EquiformerNoiseHead(NoiseHead):
    """A linear map of the ``1o`` features to one vector per atom: the predicted noise."""

    def __init__(self, channels: int):
        super().__init__()
        self.linear = nn.Linear(channels, 1, bias=False)

    def readout(self, features: Features, graph) -> Tensor:
        return self.linear(features.vectors).squeeze(-1)


class EdgeGeometry:
    """Spherical harmonics per edge, Gaussians of the distance per pair and the cosine envelope per
    pair and per edge (:func:`pair_vectors`, :func:`both_directions`). A mixin of the modules that
    need them: it sets ``rbf`` (keeping the backbone's state-dict keys) and ``sh_parity``."""

    def init_geometry(self, config: EquiformerConfig) -> None:
        self.lmax, self.envelope_cutoff = config.lmax, float(config.cutoff)
        self.rbf = GaussianRBF(config.num_rbf, config.cutoff)
        self.register_buffer("sh_parity", (-1.0) ** degree_of_row(config.lmax), persistent=False)

    def geometry(self, graph: Graph) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        vec, distance = pair_vectors(graph)
        sh = o3.spherical_harmonics(list(range(self.lmax + 1)), vec, True, normalization="component")
        sh = both_directions(graph, sh, self.sh_parity)  # Y_l(-r) = (-1)^l Y_l(r)
        envelope = cosine_cutoff(distance, self.envelope_cutoff)
        return sh, self.rbf(distance), envelope, both_directions(graph, envelope)


class EquiformerHeadBlock(EdgeGeometry, nn.Module):
    """One more transformer block (graph attention and feed-forward) and the output norm, on all
    degrees of Equiformer's features, for a noise head (the DeNS reference's head block)."""

    def __init__(self, config: EquiformerConfig):
        super().__init__()
        self.init_geometry(config)
        self.block = TransformerBlock(config)
        self.norm = EquivariantLayerNorm(config.lmax, config.num_channels)

    def forward(self, features: Features, graph: Graph) -> Features:
        sh, rbf, _, envelope = self.geometry(graph)
        return irreps_features(self.norm(self.block(features.irreps, sh, rbf, envelope, graph)))


@register_backbone
class Equiformer(EdgeGeometry, Backbone):
    name = "equiformer"
    Config = EquiformerConfig

    def __init__(self, config: EquiformerConfig):
        super().__init__(config)
        self.init_geometry(config)
        self.atom_embedding = nn.Embedding(config.max_z + 1, config.num_channels, padding_idx=0)
        self.edge_degree = EdgeDegreeEmbedding(config)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.norm = EquivariantLayerNorm(config.lmax, config.num_channels)

    @property
    def num_features(self) -> int:
        return self.config.num_channels

    def parts(self) -> dict[str, nn.Module]:
        embedding = nn.ModuleList([self.atom_embedding, self.edge_degree])
        return {"embedding": embedding} | {f"block{k}": b for k, b in enumerate(self.blocks)}

    @property
    def node_shape(self) -> tuple[int, int]:
        """Per-atom shape of the features and of ``node_inputs["irreps"]``: ((lmax+1)^2, C)."""
        return (self.lmax + 1) ** 2, self.config.num_channels

    def make_noise_head(self) -> nn.Module:
        return EquiformerNoiseHead(self.config.num_channels)

    def make_head_block(self) -> nn.Module:
        return EquiformerHeadBlock(self.config)

    def make_force_encoder(self) -> nn.Module:
        return IrrepsForceEncoder(self.lmax, self.config.num_channels)

    def forward(self, graph: Graph, node_inputs: dict[str, Tensor] | None = None) -> Features:
        sh, rbf, pair_envelope, envelope = self.geometry(graph)
        x = self.edge_degree(graph.z, sh, rbf, pair_envelope, graph)
        x = torch.cat([x[:, :1] + self.atom_embedding(graph.z)[:, None], x[:, 1:]], dim=1)
        if node_inputs:
            shape = (x.shape[0], *self.node_shape)
            x = x + checked_node_inputs(self.name, node_inputs, {NODE_INPUT_KEY: shape})[NODE_INPUT_KEY]
        for block in self.blocks:
            x = self.run_block(block, x, sh, rbf, envelope, graph)
        return irreps_features(self.norm(x))
