"""EnergyForceTask: supervised training on energies and forces (the finetune stage)."""

from __future__ import annotations

from typing import Any

import lightning
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ..data.graph import Graph
from ..models.encoders import build_force_encoder
from ..models.heads import build_noise_head
from ..models.potential import Potential
from . import optim
from .dens import (
    Corruption,
    corrupt,
    dens_generator,
    dens_weight,
    masked_mean,
    masked_mse,
    select_structures,
    structures_with,
)
from .logging import log_parts
from .metrics import EnergyForceMetrics


class EnergyForceTask(lightning.LightningModule):
    """Loss ``w_E · mean(((E - E_ref) / N / s)²) + w_F · mean(((F - F_ref) / s)²)``, with ``s`` the
    training set's energy scale (force RMS) so both terms are of order one whatever the units.

    Forces are ``-dE/dpos`` by autograd, with ``create_graph`` only in training.

    With ``task.dens.enabled``, DeNS (Liao et al. 2024) runs as an auxiliary task in training: each
    structure is chosen with probability ``p``, each atom of a chosen structure corrupted with
    probability ``corrupt_ratio`` by N(0, sigma²) noise (fixed atoms never); the labelled forces of
    the corrupted atoms are encoded into the backbone's input; a separate noise head predicts
    ``eps / sigma`` for them. The loss becomes ``w_E L_E + w_F L_F(uncorrupted atoms) + w_dens(t)
    L_noise(corrupted atoms)``, with one forward pass at the corrupted positions: ``L_E`` fits every
    structure's predicted energy to its original label, as the reference code does
    (``energy_on_corrupted=false``: only structures with no corrupted atom). Every term is a masked
    mean that stays in the graph when its mask is empty (no DDP hang). Validation and test never
    corrupt nor encode.
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
        self.dens_seed = torch.initial_seed()
        self.noise_head, self.force_encoder = None, None
        dens = self.task_cfg.get("dens")
        if dens is not None and dens.enabled:
            # built from a forked RNG: the potential's initialisation and the data order do not change
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.dens_seed + 1)
                self.noise_head = build_noise_head(self.potential.backbone)
                if dens.force_encoding:
                    self.force_encoder = build_force_encoder(self.potential.backbone)

    def set_statistics(self, references: dict[int, float], scale: float) -> None:
        self.potential.energy_head.set_statistics(references, scale)
        self.loss_scale.fill_(scale)
        if self.force_encoder is not None:
            self.force_encoder.set_force_scale(scale)

    @property
    def dens_enabled(self) -> bool:
        return self.noise_head is not None

    @property
    def uses_forces(self) -> bool:
        return self.task_cfg.forces_weight > 0

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        return self.potential(graph, compute_forces=True)

    def transfer_batch_to_device(self, batch: Graph, device: torch.device, dataloader_idx: int) -> Graph:
        return batch.to(device, dtype=self.dtype)

    def losses(
        self,
        out: dict[str, Tensor],
        batch: Graph,
        structures: Tensor | None = None,
        atoms: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Energy and force terms; ``structures`` [B] and ``atoms`` [N] (bool) restrict them (DeNS)."""
        scale = self.loss_scale
        parts: dict[str, Tensor] = {}
        total = out["energy"].new_zeros(())
        if self.task_cfg.energy_weight > 0:
            per_atom = (out["energy"] - batch.energy) / batch.num_atoms.to(out["energy"].dtype)
            squared = (per_atom / scale).pow(2)
            parts["energy_loss"] = squared.mean() if structures is None else masked_mean(squared, structures)
            total = total + self.task_cfg.energy_weight * parts["energy_loss"]
        if self.uses_forces:
            squared = ((out["forces"] - batch.forces) / scale).pow(2)
            parts["forces_loss"] = squared.mean() if atoms is None else masked_mean(squared, atoms)
            total = total + self.task_cfg.forces_weight * parts["forces_loss"]
        parts["loss"] = total
        return parts

    def training_step(self, batch: Graph, batch_idx: int) -> Tensor:
        if self.dens_enabled:
            parts = self.dens_losses(batch)
        else:
            out = self.potential(batch, compute_forces=self.uses_forces, create_graph=True)
            parts = self.losses(out, batch)
        log_parts(self, "train", parts, batch.num_graphs, on_step=True)
        return parts["loss"]

    def dens_corruption(self, batch: Graph, generator: torch.Generator) -> Corruption:
        cfg = self.task_cfg.dens
        chosen = select_structures(batch.num_graphs, cfg.probability, batch.pos, generator)
        return corrupt(
            batch, cfg.sigma, cfg.sigma_max, cfg.corrupt_ratio, structures=chosen, generator=generator
        )

    def dens_forward(self, batch: Graph, corruption: Corruption) -> tuple[dict[str, Tensor], Tensor]:
        """Energies, forces and predicted noise at the corrupted positions, with the corrupted atoms'
        labelled forces encoded. Without a corrupted atom the batch (and its neighbour list) is used
        as is, so ``probability=0`` trains exactly like plain energy/force training."""
        mask = corruption.mask
        graph = batch.with_positions(corruption.pos) if bool(mask.any()) else batch
        graph = self.potential.prepare(graph.replace(pos=graph.pos.detach().requires_grad_(True)))
        node_inputs = None
        if self.force_encoder is not None:
            node_inputs = self.force_encoder(graph, batch.forces, mask)
        out = self.potential(graph, compute_forces=True, create_graph=True, node_inputs=node_inputs)
        return out, self.noise_head(out["features"], graph)

    def dens_losses(self, batch: Graph) -> dict[str, Tensor]:
        cfg = self.task_cfg.dens
        corruption = self.dens_corruption(
            batch, dens_generator(self.dens_seed, self.global_step, self.global_rank)
        )
        out, predicted = self.dens_forward(batch, corruption)
        mask = corruption.mask
        if bool(mask.any()):
            structures = None if cfg.energy_on_corrupted else ~structures_with(mask, batch)
            parts = self.losses(out, batch, structures=structures, atoms=~mask)
        else:
            parts = self.losses(out, batch)
        parts["noise_loss"] = masked_mse(predicted, corruption.target, mask)
        weight = dens_weight(cfg.weight, cfg.decay, self.global_step, optim.total_steps(self))
        parts["loss"] = parts["loss"] + weight * parts["noise_loss"]
        parts["dens_weight"] = parts["loss"].new_tensor(weight)
        parts["corrupted_fraction"] = mask.to(parts["loss"].dtype).mean()
        return parts

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
        return optim.configure(self, groups, self.task_cfg, optim.total_steps(self))
