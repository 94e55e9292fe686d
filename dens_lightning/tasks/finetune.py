"""EnergyForceTask: supervised training on energies and forces (the finetune stage)."""

from __future__ import annotations

from typing import Any

import lightning
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ..data.graph import Graph
from ..models.potential import Potential
from . import optim
from .logging import log_parts
from .metrics import EnergyForceMetrics


class EnergyForceTask(lightning.LightningModule):
    """Loss ``w_E · mean(((E - E_ref) / N / s)²) + w_F · mean(((F - F_ref) / s)²)``, with ``s`` the
    training set's energy scale (force RMS) so both terms are of order one whatever the units.

    Forces are ``-dE/dpos`` by autograd, with ``create_graph`` only in training.
    """

    def __init__(
        self,
        model_name: str,
        model_hparams: dict[str, Any],
        task: dict[str, Any],
        finetune: dict[str, Any] | None = None,
        neighbor_backend: str = "auto",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.task_cfg = OmegaConf.create(task)
        self.finetune_cfg = OmegaConf.create(finetune or {"freeze_backbone": False, "backbone_lr_scale": 1.0})
        self.potential = Potential.build(model_name, model_hparams, neighbor_backend=neighbor_backend)
        self.register_buffer("loss_scale", torch.ones(()))
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()
        if self.finetune_cfg.freeze_backbone:
            self.potential.backbone.requires_grad_(False)

    def set_statistics(self, references: dict[int, float], scale: float) -> None:
        self.potential.energy_head.set_statistics(references, scale)
        self.loss_scale.fill_(scale)

    @property
    def uses_forces(self) -> bool:
        return self.task_cfg.forces_weight > 0

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        return self.potential(graph, compute_forces=True)

    def transfer_batch_to_device(self, batch: Graph, device: torch.device, dataloader_idx: int) -> Graph:
        return batch.to(device, dtype=self.dtype)

    def losses(self, out: dict[str, Tensor], batch: Graph) -> dict[str, Tensor]:
        scale = self.loss_scale
        parts: dict[str, Tensor] = {}
        total = out["energy"].new_zeros(())
        if self.task_cfg.energy_weight > 0:
            per_atom = (out["energy"] - batch.energy) / batch.num_atoms.to(out["energy"].dtype)
            parts["energy_loss"] = (per_atom / scale).pow(2).mean()
            total = total + self.task_cfg.energy_weight * parts["energy_loss"]
        if self.uses_forces:
            parts["forces_loss"] = ((out["forces"] - batch.forces) / scale).pow(2).mean()
            total = total + self.task_cfg.forces_weight * parts["forces_loss"]
        parts["loss"] = total
        return parts

    def training_step(self, batch: Graph, batch_idx: int) -> Tensor:
        out = self.potential(batch, compute_forces=self.uses_forces, create_graph=True)
        parts = self.losses(out, batch)
        log_parts(self, "train", parts, batch.num_graphs, on_step=True)
        return parts["loss"]

    def _evaluate(self, batch: Graph, metrics: EnergyForceMetrics, prefix: str) -> None:
        with torch.enable_grad():
            out = self.potential(batch, compute_forces=True, create_graph=False)
        if batch.energy is not None and (batch.forces is not None or not self.uses_forces):
            log_parts(self, prefix, self.losses(out, batch), batch.num_graphs, on_step=False)
        metrics.update(out["energy"], batch.energy, batch.num_atoms, out["forces"], batch.forces)

    def validation_step(self, batch: Graph, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch: Graph, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, prefix: str, metrics: EnergyForceMetrics) -> None:
        for name, value in metrics.compute().items():
            self.log(f"{prefix}/{name}", value, prog_bar=name == "forces_mae_meV_per_A")
        metrics.reset()

    def configure_optimizers(self):
        groups = optim.param_groups(
            self, self.potential.backbone, self.task_cfg.lr, self.finetune_cfg.backbone_lr_scale
        )
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return optim.configure(self, groups, self.task_cfg, total)
