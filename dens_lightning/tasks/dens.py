"""Coordinate corruption and masked losses, shared by denoising pretraining and DeNS.

Noise ``eps ~ N(0, sigma^2)`` per atom and Cartesian axis (Å); ``sigma`` is fixed or drawn once per
structure log-uniformly from ``[sigma, sigma_max]`` (multi-scale). Only a random subset of atoms may
be corrupted (each with probability ``atom_fraction``), never atoms marked fixed. The regression
target is ``eps / sigma``, of unit variance, so predicting zero scores a loss of 1.

Every random number of a structure comes from a generator keyed by (seed, stream, step, the
structure's index in its split): a structure is corrupted the same way whatever batch or device it
lands in, so W processes of batch B draw exactly what one process of batch W·B draws, the ranks of
a DDP run draw independent noise, and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.graph import Graph
from .reduction import Mean, masked_sum

DECAYS = ("linear", "none")  # task.dens.decay: the noise weight over training

# Streams of draws, so pretraining, its validation and DeNS never reuse each other's numbers.
PRETRAIN, PRETRAIN_VALIDATION, DENS = 1, 2, 3
_MASK64 = (1 << 64) - 1


@dataclass
class Corruption:
    pos: Tensor  # [N, 3] corrupted positions, Å
    noise: Tensor  # [N, 3] the displacement eps, Å (zero where not corrupted)
    sigma: Tensor  # [N] sigma of each atom's structure, Å
    mask: Tensor  # bool [N], atoms that were corrupted

    @property
    def target(self) -> Tensor:
        """``eps / sigma`` [N, 3]."""
        return self.noise / self.sigma[:, None]


def _mix(x: int) -> int:
    """The splitmix64 finaliser: a 64-bit integer hash with good avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def structure_seed(seed: int, stream: int, step: int, index: int) -> int:
    """The generator seed of one structure's draws at one step."""
    key = _mix(seed & _MASK64)
    for part in (stream, step, index):
        key = _mix(key ^ (part & _MASK64))
    return key


@dataclass
class Draws:
    """The random numbers of one batch: uniforms per structure [B, 2] (sigma, DeNS selection) and per
    atom [N] (partial corruption), and standard normals [N, 3]."""

    structure: Tensor
    atom: Tensor
    normal: Tensor


def draw(graph: Graph, seed: int, stream: int, step: int) -> Draws:
    """The draws of ``graph``'s structures, each from its own keyed generator (on the CPU, in float64,
    then cast: float32 and float64 runs draw the same numbers). Without ``graph.idx`` a structure's
    index is its place in the batch."""
    index = graph.idx.tolist() if graph.idx is not None else range(graph.num_graphs)
    sizes = graph.num_atoms.tolist()
    structure, atom, normal = [], [], []
    for i, n in zip(index, sizes):
        generator = torch.Generator().manual_seed(structure_seed(seed, stream, step, int(i)))
        uniforms = torch.rand(2 + n, generator=generator, dtype=torch.float64)
        structure.append(uniforms[:2])
        atom.append(uniforms[2:])
        normal.append(torch.randn(n, 3, generator=generator, dtype=torch.float64))
    like = graph.pos
    return Draws(
        structure=torch.stack(structure).to(like.device, like.dtype),
        atom=torch.cat(atom).to(like.device, like.dtype),
        normal=torch.cat(normal).to(like.device, like.dtype),
    )


def draw_sigma(uniform: Tensor, sigma: float, sigma_max: float | None) -> Tensor:
    """One sigma per structure [B] from uniforms [B]: ``sigma``, or log-uniform on ``[sigma, sigma_max]``."""
    if sigma_max is None or sigma_max <= sigma:
        return torch.full_like(uniform, float(sigma))
    return torch.exp(math.log(sigma) + uniform * (math.log(sigma_max) - math.log(sigma)))


def corrupt(
    graph: Graph,
    sigma: float,
    draws: Draws,
    sigma_max: float | None = None,
    atom_fraction: float = 1.0,
    structures: Tensor | None = None,
) -> Corruption:
    """Add Gaussian noise to the positions of ``graph``, using ``draws`` (see :func:`draw`).

    ``structures`` (bool [B]) limits corruption to some structures (DeNS corrupts a structure with
    probability ``p``).
    """
    pos = graph.pos
    atom_sigma = draw_sigma(draws.structure[:, 0], sigma, sigma_max)[graph.batch]
    mask = torch.ones(pos.shape[0], dtype=torch.bool, device=pos.device)
    if atom_fraction < 1.0:
        mask = draws.atom < atom_fraction
    if structures is not None:
        mask = mask & structures[graph.batch]
    if graph.fixed is not None:
        mask = mask & ~graph.fixed
    noise = draws.normal * atom_sigma[:, None] * mask[:, None]
    return Corruption(pos=pos + noise, noise=noise, sigma=atom_sigma, mask=mask)


def masked_cosine(prediction: Tensor, target: Tensor, mask: Tensor) -> Mean:
    """Cosine similarity between predicted and true noise vectors over the masked atoms."""
    return masked_sum(torch.nn.functional.cosine_similarity(prediction, target, dim=-1, eps=1e-12), mask)


def select_structures(draws: Draws, probability: float) -> Tensor:
    """bool [B]: each structure chosen for corruption with ``probability``."""
    return draws.structure[:, 1] < probability


def dens_weight(weight: float, decay: str, step: int, total_steps: int) -> float:
    """``w_dens(t)``: constant (``decay="none"``), or falling linearly from ``weight`` at the first
    step to 0 at the last (``"linear"``, the DeNS MD17 schedule)."""
    if decay == "none" or total_steps <= 0:
        return float(weight)
    return float(weight) * max(0.0, 1.0 - step / total_steps)


def structures_with(mask: Tensor, graph: Graph) -> Tensor:
    """bool [B]: the structures that contain at least one atom of ``mask``."""
    counts = torch.zeros(graph.num_graphs, dtype=torch.long, device=mask.device)
    return counts.index_add(0, graph.batch, mask.long()) > 0
