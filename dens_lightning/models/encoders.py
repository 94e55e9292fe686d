"""Force encoding for DeNS (Liao et al. 2024): the forces of the corrupted atoms become per-atom inputs
of the backbone, so that denoising a non-equilibrium structure has one well-defined target.

An encoder maps forces [N, 3] (eV/Å) and a mask [N] of the atoms to encode to the backbone's
``node_inputs``; atoms outside the mask get exact zeros (the encoder's parameters stay in the graph
even when no atom is encoded, so DDP never finds them unused). Forces are divided by the training
force RMS (``force_scale``, set from the data statistics) so magnitudes are of order one.

- :class:`IrrepsForceEncoder` (Equiformer, as in the paper): spherical harmonics of the force
  direction up to the backbone's lmax, times a per-degree, per-channel weight from a Gaussian
  embedding of the magnitude (one linear map per degree), added to the initial node embedding.
- :class:`VectorForceEncoder` (PaiNN): the unit force times magnitude-dependent weights into the
  vector channel, a magnitude embedding into the scalar channel.
- :class:`EdgeProjectionForceEncoder` (SchNet, scalar features only; beyond the paper): each encoded
  atom's force projected on the unit vectors to its neighbours, ``F_i · r_ij / |r_ij|``, a rotation
  invariant, expanded in Gaussians, damped by the cutoff envelope and summed over neighbours, plus the
  magnitude embedding, into the scalar channel.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn

from ..data.graph import Graph
from .base import cosine_cutoff, degree_of_row, edge_vectors, gather, gaussians

MAGNITUDE_RANGE = 4.0  # force magnitudes embedded up to this many training force RMS
NUM_BASIS = 16  # Gaussians of the magnitude (and of the edge projections)


def gaussian_basis(values: Tensor, low: float, high: float, count: int) -> Tensor:
    """[..., count] Gaussians with centres evenly spaced on [low, high] and width their spacing."""
    centers = torch.linspace(low, high, count, dtype=values.dtype, device=values.device)
    return gaussians(values, centers, (high - low) / (count - 1))


def build_force_encoder(backbone) -> ForceEncoder:
    """The backbone's force encoder; a backbone that takes no per-atom inputs is refused."""
    encoder = backbone.make_force_encoder()
    if encoder is None:
        raise ValueError(f"{backbone.name} cannot take encoded forces (task.dens.force_encoding)")
    return encoder


class ForceEncoder(nn.Module):
    """Base: holds the force scale and the magnitude embedding; subclasses return node inputs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("force_scale", torch.ones(()))

    @torch.no_grad()
    def set_force_scale(self, scale: float) -> None:
        """The training set's force RMS (eV/Å)."""
        self.force_scale.fill_(float(scale))

    def scaled(self, forces: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Forces of the masked atoms in units of the force scale (zero elsewhere), their magnitudes and
        unit directions (zero for a zero force)."""
        forces = forces.detach() / self.force_scale * mask[:, None].to(forces.dtype)
        magnitude = torch.linalg.vector_norm(forces, dim=-1)
        direction = forces / magnitude.clamp_min(1e-9)[:, None]
        return forces, magnitude, direction

    def magnitude_embedding(self, magnitude: Tensor) -> Tensor:
        return gaussian_basis(magnitude, 0.0, MAGNITUDE_RANGE, NUM_BASIS)

    def forward(self, graph: Graph, forces: Tensor, mask: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class IrrepsForceEncoder(ForceEncoder):
    """Y^l(F_i/|F_i|) · W_l e(|F_i|) per degree l and channel, as ``node_inputs["irreps"]``
    [N, (lmax+1)^2, C]."""

    def __init__(self, lmax: int, channels: int):
        super().__init__()
        self.lmax, self.channels = lmax, channels
        self.per_degree = nn.Linear(NUM_BASIS, (lmax + 1) * channels)
        self.register_buffer("rows", degree_of_row(lmax), persistent=False)

    def forward(self, graph: Graph, forces: Tensor, mask: Tensor) -> dict[str, Tensor]:
        _, magnitude, direction = self.scaled(forces, mask)
        sh = o3.spherical_harmonics(list(range(self.lmax + 1)), direction, False, normalization="component")
        weights = self.per_degree(self.magnitude_embedding(magnitude))
        weights = weights.view(-1, self.lmax + 1, self.channels).index_select(1, self.rows)
        keep = mask.to(sh.dtype)[:, None, None]
        return {"irreps": sh[:, :, None] * weights * keep}


class VectorForceEncoder(ForceEncoder):
    """``scalars = W_s e(|F_i|)`` [N, F] and ``vectors = F_i/|F_i| · W_v e(|F_i|)`` [N, 3, F]."""

    def __init__(self, channels: int):
        super().__init__()
        self.to_scalars = nn.Linear(NUM_BASIS, channels)
        self.to_vectors = nn.Linear(NUM_BASIS, channels, bias=False)

    def forward(self, graph: Graph, forces: Tensor, mask: Tensor) -> dict[str, Tensor]:
        _, magnitude, direction = self.scaled(forces, mask)
        embedding = self.magnitude_embedding(magnitude)
        keep = mask.to(embedding.dtype)[:, None]
        return {
            "scalars": self.to_scalars(embedding) * keep,
            "vectors": direction[:, :, None] * self.to_vectors(embedding)[:, None, :] * keep[:, :, None],
        }


class EdgeProjectionForceEncoder(ForceEncoder):
    """``scalars_i = W_m e(|F_i|) + Σ_j W_p g(F_i · r̂_ij) env(d_ij)`` [N, F] for the encoded atoms i;
    invariant, so it suits a backbone with scalar features only. Differentiable in the positions
    (through r̂_ij), so forces by autograd include it."""

    def __init__(self, channels: int, cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.from_magnitude = nn.Linear(NUM_BASIS, channels)
        self.from_projections = nn.Linear(NUM_BASIS, channels, bias=False)

    def forward(self, graph: Graph, forces: Tensor, mask: Tensor) -> dict[str, Tensor]:
        scaled, magnitude, _ = self.scaled(forces, mask)
        j, i = graph.edge_index
        vec, distance = edge_vectors(graph)
        projection = (gather(scaled, i) * vec).sum(-1) / distance
        basis = gaussian_basis(projection, -MAGNITUDE_RANGE, MAGNITUDE_RANGE, NUM_BASIS)
        edges = basis * cosine_cutoff(distance, self.cutoff)[:, None]
        # W_p is linear: sum the NUM_BASIS-wide terms per atom first, then map to the channels once
        summed = torch.zeros(scaled.shape[0], NUM_BASIS, dtype=edges.dtype, device=edges.device)
        summed = self.from_projections(summed.index_add(0, i, edges))
        keep = mask.to(summed.dtype)[:, None]
        return {"scalars": (self.from_magnitude(self.magnitude_embedding(magnitude)) + summed) * keep}
