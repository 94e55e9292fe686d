"""Output heads: features → per-structure energies."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import (
    Features,
    GaussianRBF,
    ShiftedSoftplus,
    both_directions,
    cosine_cutoff,
    gather,
    pair_vectors,
    xavier_init,
)


def scalar_mlp(num_features: int, hidden: int | None = None, output_bias: bool = True) -> nn.Sequential:
    """Per-atom features → one number per atom: Linear, shifted softplus, Linear (Xavier init)."""
    hidden = hidden or max(num_features // 2, 1)
    mlp = nn.Sequential(
        nn.Linear(num_features, hidden), ShiftedSoftplus(), nn.Linear(hidden, 1, bias=output_bias)
    )
    xavier_init(mlp)
    return mlp


class EnergyHead(nn.Module):
    """Per-atom energy ``E_i = scale[z_i] · MLP(h_i) + shift[z_i]``, summed per structure (eV).

    ``shift`` holds per-element reference energies fitted by least squares on the training split
    (fixed); ``scale`` starts at the training forces' RMS and is learned, so the network itself
    works on numbers of order one. Structure energies are float64 whatever the model's dtype: the
    references are summed in float64 and the learned part added to them, since a float32 total near
    -17,000 eV (a 27-atom organic molecule) resolves only 2 meV.
    """

    def __init__(self, num_features: int, max_z: int, hidden: int | None = None):
        super().__init__()
        self.mlp = scalar_mlp(num_features, hidden)
        self.scale = nn.Parameter(torch.ones(max_z + 1))
        self.register_buffer("shift", torch.zeros(max_z + 1))

    @torch.no_grad()
    def set_statistics(self, shift: dict[int, float], scale: float) -> None:
        """Reference energies per atomic number (eV) and the energy scale (eV)."""
        self.set_references(shift)
        self.scale.fill_(float(scale))

    @torch.no_grad()
    def set_references(self, shift: dict[int, float]) -> None:
        """Reference energies per atomic number (eV); every other element's become 0."""
        self.shift.zero_()
        for z, value in shift.items():
            self.shift[int(z)] = float(value)

    @torch.no_grad()
    def start_at_references(self) -> None:
        """Zero the output layer, so that every structure's energy starts at its reference energies
        and every force at zero; the layer still learns (its inputs are not zero). For a fresh head
        on a pretrained backbone, whose features a random readout turns into large, position-sensitive
        energies."""
        output = self.mlp[-1]
        output.weight.zero_()
        if output.bias is not None:
            output.bias.zero_()

    def forward(self, features: Features, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        atomic = self.mlp(features.scalars).squeeze(-1) * self.scale.index_select(0, z)
        references = self.shift.index_select(0, z).to(torch.float64)
        learned = atomic.new_zeros(num_graphs).index_add(0, batch, atomic)
        energy = references.new_zeros(num_graphs).index_add(0, batch, references)
        return energy + learned.to(torch.float64)


class NoiseHead(nn.Module):
    """Features → predicted noise ``eps / sigma`` per atom [N, 3] (denoising; DESIGN section 1).

    A head is not part of the backbone: the pretrain task owns it and finetuning drops it.
    ``needs_position_grad`` says whether the head differentiates with respect to the positions
    (the task must then make them require grad before the backbone runs).

    ``message_blocks``: message-passing blocks of the backbone's own kind (``Backbone.make_head_block``),
    run on the features before the per-atom :meth:`readout`, so the head sees its neighbourhood
    (the DeNS reference's noise head is a full graph-attention block).
    """

    needs_position_grad: bool = False

    def __init__(self, blocks: list[nn.Module] | None = None):
        super().__init__()
        self.message_blocks = nn.ModuleList(blocks or [])

    def forward(self, features: Features, graph) -> Tensor:
        for block in self.message_blocks:
            features = block(features, graph)
        return self.readout(features, graph)

    def readout(self, features: Features, graph) -> Tensor:
        raise NotImplementedError


class GradientNoiseHead(NoiseHead):
    """For backbones with scalar features only (SchNet): a learned scalar ``s = Σ_i MLP(h_i)`` per
    batch, and the noise prediction ``∂s/∂x_i`` (Wang et al., JCTC 2023). It is rotation-equivariant
    because ``s`` is invariant, and it has the shape of a force, so the pretrained backbone already
    learns position derivatives before finetuning on forces."""

    needs_position_grad = True

    def __init__(self, num_features: int, hidden: int | None = None, blocks: list[nn.Module] | None = None):
        super().__init__(blocks)
        # no output bias: a constant offset of s has no gradient, so it would be unused (DDP)
        self.mlp = scalar_mlp(num_features, hidden, output_bias=False)

    def readout(self, features: Features, graph) -> Tensor:
        scalar = self.mlp(features.scalars).sum()
        keep = self.training
        (grad,) = torch.autograd.grad(scalar, graph.pos, create_graph=keep, retain_graph=keep)
        return grad


class EdgeNoiseHead(NoiseHead):
    """For backbones with scalar features only, without a second derivative (DeNS): the noise
    prediction ``Σ_j w_ij r̂_ij`` with ``w_ij = MLP(A h_i + B h_j + C g(d_ij)) · env(d_ij)``, ``r̂_ij``
    the unit vector from atom i to its neighbour j and ``g`` Gaussians of the distance.

    The gradient of an invariant ``s`` of the distances has this form too (``∂s/∂x_i = -Σ_j ∂s/∂d_ij
    r̂_ij``); here the pair weights are predicted directly, so training differentiates once less: a DeNS
    step already takes the second derivative through the forces."""

    def __init__(
        self,
        num_features: int,
        cutoff: float,
        hidden: int | None = None,
        num_rbf: int = 50,
        blocks: list[nn.Module] | None = None,
    ):
        super().__init__(blocks)
        hidden = hidden or max(num_features // 2, 1)
        self.cutoff = cutoff
        self.center = nn.Linear(num_features, hidden)
        self.neighbor = nn.Linear(num_features, hidden, bias=False)
        self.rbf = GaussianRBF(num_rbf, cutoff)
        self.radial = nn.Linear(num_rbf, hidden, bias=False)
        self.weight = nn.Sequential(
            ShiftedSoftplus(), nn.Linear(hidden, hidden), ShiftedSoftplus(), nn.Linear(hidden, 1)
        )
        for layer in (self.center, self.neighbor, self.radial, self.weight):
            xavier_init(layer)
        with torch.no_grad():  # starts near zero noise (a loss near 1), as the gradient head does
            self.weight[-1].weight.mul_(0.01)

    def readout(self, features: Features, graph) -> Tensor:
        j, i = graph.edge_index
        vec, distance = pair_vectors(graph)
        radial = both_directions(graph, self.radial(self.rbf(distance)))
        envelope = both_directions(graph, cosine_cutoff(distance, self.cutoff) / distance)
        unit = both_directions(graph, vec, -1.0) * envelope[:, None]
        h = features.scalars
        pair = gather(self.center(h), i) + gather(self.neighbor(h), j) + radial
        weighted = self.weight(pair) * unit
        noise = torch.zeros(h.shape[0], 3, dtype=weighted.dtype, device=weighted.device)
        return noise.index_add(0, i, weighted)


def build_noise_head(backbone, differentiate: bool = True, blocks: int = 0) -> NoiseHead:
    """The backbone's own noise head when it brings one (vector or irreps backbones); else the
    gradient head (``differentiate``: pretraining, as in Wang et al.) or the edge head (DeNS), which
    any backbone with a graph can use. ``blocks`` message-passing blocks of the backbone's kind run
    before the head's readout (a backbone without :meth:`make_head_block` is refused)."""
    extra = []
    for _ in range(blocks):
        block = backbone.make_head_block()
        if block is None:
            raise ValueError(f"{backbone.name} has no message-passing block for a noise head (head_blocks)")
        extra.append(block)
    head = backbone.make_noise_head()
    if head is None:
        if differentiate:
            head = GradientNoiseHead(backbone.num_features)
        else:
            head = EdgeNoiseHead(backbone.num_features, backbone.cutoff)
    if extra:
        head.message_blocks.extend(extra)
    return head
