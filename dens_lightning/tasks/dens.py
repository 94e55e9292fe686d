"""Coordinate corruption and masked losses, shared by denoising pretraining and DeNS.

Noise ``eps ~ N(0, sigma^2)`` per atom and Cartesian axis (Å); ``sigma`` is fixed or drawn once per
structure log-uniformly from ``[sigma, sigma_max]`` (multi-scale). Only a random subset of atoms may
be corrupted (each with probability ``atom_fraction``), never atoms marked fixed. The regression
target is ``eps / sigma``, of unit variance, so predicting zero scores a loss of 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.graph import Graph


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


def _uniform(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _normal(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def draw_sigma(
    num_graphs: int, like: Tensor, sigma: float, sigma_max: float | None, generator=None
) -> Tensor:
    """One sigma per structure [B]: ``sigma``, or log-uniform on ``[sigma, sigma_max]``."""
    if sigma_max is None or sigma_max <= sigma:
        return like.new_full((num_graphs,), float(sigma))
    u = _uniform((num_graphs,), like, generator)
    return torch.exp(math.log(sigma) + u * (math.log(sigma_max) - math.log(sigma)))


def corrupt(
    graph: Graph,
    sigma: float,
    sigma_max: float | None = None,
    atom_fraction: float = 1.0,
    structures: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Corruption:
    """Add Gaussian noise to the positions of ``graph``.

    ``structures`` (bool [B]) limits corruption to some structures (DeNS corrupts a structure with
    probability ``p``); ``generator`` makes the draw reproducible (validation uses fixed seeds).
    """
    pos = graph.pos
    n = pos.shape[0]
    per_structure = draw_sigma(graph.num_graphs, pos, sigma, sigma_max, generator)
    atom_sigma = per_structure[graph.batch]
    mask = torch.ones(n, dtype=torch.bool, device=pos.device)
    if atom_fraction < 1.0:
        mask = _uniform((n,), pos, generator) < atom_fraction
    if structures is not None:
        mask = mask & structures[graph.batch]
    if graph.fixed is not None:
        mask = mask & ~graph.fixed
    noise = _normal((n, 3), pos, generator) * atom_sigma[:, None] * mask[:, None]
    return Corruption(pos=pos + noise, noise=noise, sigma=atom_sigma, mask=mask)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` [K] or [K, ...] over the rows in ``mask`` [K]; 0, still in the graph, when
    the mask is empty."""
    weights = mask.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error per component over the masked atoms; 0 (still in the graph, so every
    parameter gets a gradient and DDP does not hang) when no atom is masked."""
    return masked_mean((prediction - target).pow(2), mask)


def masked_cosine(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean cosine similarity between predicted and true noise vectors over the masked atoms."""
    return masked_mean(torch.nn.functional.cosine_similarity(prediction, target, dim=-1, eps=1e-12), mask)


def dens_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of one training step's DeNS draws. Separate from the global RNG, so turning
    DeNS on changes neither the initialisation nor the data order, and a resumed run draws the same
    corruption at the same step."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def select_structures(
    num_graphs: int, probability: float, like: Tensor, generator: torch.Generator
) -> Tensor:
    """bool [B]: each structure chosen for corruption with ``probability``."""
    return _uniform((num_graphs,), like, generator) < probability


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
