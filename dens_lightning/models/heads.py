"""Output heads: features → per-structure energies."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Features, ShiftedSoftplus, xavier_init


class EnergyHead(nn.Module):
    """Per-atom energy ``E_i = scale[z_i] · MLP(h_i) + shift[z_i]``, summed per structure (eV).

    ``shift`` holds per-element reference energies fitted by least squares on the training split
    (fixed); ``scale`` starts at the training forces' RMS and is learned, so the network itself
    works on numbers of order one.
    """

    def __init__(self, num_features: int, max_z: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(num_features // 2, 1)
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden), ShiftedSoftplus(), nn.Linear(hidden, 1))
        xavier_init(self.mlp)
        self.scale = nn.Parameter(torch.ones(max_z + 1))
        self.register_buffer("shift", torch.zeros(max_z + 1))

    @torch.no_grad()
    def set_statistics(self, shift: dict[int, float], scale: float) -> None:
        """Reference energies per atomic number (eV) and the energy scale (eV)."""
        self.shift.zero_()
        for z, value in shift.items():
            self.shift[int(z)] = float(value)
        self.scale.fill_(float(scale))

    def forward(self, features: Features, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        atomic = self.mlp(features.scalars).squeeze(-1) * self.scale[z] + self.shift[z]
        energy = torch.zeros(num_graphs, dtype=atomic.dtype, device=atomic.device)
        return energy.index_add(0, batch, atomic)
