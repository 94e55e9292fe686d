"""Energy and force errors in meV and meV/Å, accumulated over an epoch with torchmetrics."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric, MetricCollection

# Names match the `test` command's JSON keys (DESIGN section 3).
METRIC_NAMES = (
    "energy_mae_meV",
    "energy_rmse_meV",
    "energy_mae_meV_per_atom",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
)


class EnergyForceMetrics(nn.Module):
    """Sums of errors and counts, in float64 whatever the model's precision (a float32 sum over
    10^6 force components keeps only ~4 digits), added across ranks when computed.
    ``sync=False`` for an evaluation that runs on one process only (never gathers across ranks)."""

    def __init__(self, sync: bool = True):
        super().__init__()
        options = {"sync_on_compute": sync}
        self.energy = MetricCollection(
            {"mae": MeanAbsoluteError(**options), "rmse": MeanSquaredError(squared=False, **options)}
        )
        self.energy_per_atom = MeanAbsoluteError(**options)
        self.forces = MetricCollection(
            {"mae": MeanAbsoluteError(**options), "rmse": MeanSquaredError(squared=False, **options)}
        )
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.set_dtype(torch.float64)

    def update(
        self,
        energy: Tensor,
        energy_ref: Tensor | None,
        num_atoms: Tensor,
        forces: Tensor | None,
        forces_ref: Tensor | None,
    ) -> None:
        """Inputs in eV and eV/Å."""
        if energy_ref is not None:
            self.energy.update(energy.detach() * 1e3, energy_ref * 1e3)
            self.energy_per_atom.update(energy.detach() * 1e3 / num_atoms, energy_ref * 1e3 / num_atoms)
        if forces is not None and forces_ref is not None:
            self.forces.update(forces.detach().reshape(-1) * 1e3, forces_ref.reshape(-1) * 1e3)

    def compute(self) -> dict[str, float]:
        out = {}
        if self.energy_per_atom.update_count:
            energy = self.energy.compute()
            out.update(
                energy_mae_meV=float(energy["mae"]),
                energy_rmse_meV=float(energy["rmse"]),
                energy_mae_meV_per_atom=float(self.energy_per_atom.compute()),
            )
        if self.forces["mae"].update_count:
            forces = self.forces.compute()
            out.update(forces_mae_meV_per_A=float(forces["mae"]), forces_rmse_meV_per_A=float(forces["rmse"]))
        return out

    def reset(self) -> None:
        self.energy.reset()
        self.energy_per_atom.reset()
        self.forces.reset()
