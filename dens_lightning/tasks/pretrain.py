"""DenoisingPretraining: predict the noise added to atomic positions (Wang et al., JCTC 2023).

No energy labels are used. With ``task.dens.enabled`` (DeNS pretraining, Liao et al. 2024) the
labelled forces of the corrupted atoms are encoded into the backbone's input, so that denoising a
non-equilibrium structure has one well-defined target; the corruption is still ``task.noise``'s
(``atom_fraction < 1`` gives DeNS's partial corruption).

Each training step corrupts the batch afresh; a validation structure is always corrupted the same
way, so the validation loss of different epochs compares like with like. Every draw is keyed by the
structure (see :mod:`.dens`), so the numbers do not depend on the batch size or the device count.
Logged: ``loss`` (on ``eps / sigma`` in the form ``task.loss.noise`` sets: ``squared``, the mean
squared error of each component, 1.0 for predicting zero; ``norm``, the mean norm of each atom's
error vector, sqrt(8/π) ≈ 1.60 for predicting zero) and ``cosine`` (the
mean cosine similarity between predicted and true noise vectors), means over every noised atom of
the step (training) or of the whole validation set (validation), across all devices.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning
import torch
from torch import Tensor

from ..data.graph import Graph
from ..models.base import build_backbone
from ..models.encoders import build_force_encoder
from ..models.heads import build_noise_head
from ..models.potential import Potential
from ..models.training_model import TrainingModel
from . import optim
from .clipping import LoggedGradientClipping
from .config import TaskConfig, task_config
from .dens import PRETRAIN, PRETRAIN_VALIDATION, Corruption, corrupt, draw, masked_cosine
from .faults import NonFiniteLossGuard
from .logging import log_epoch_means, log_parts
from .losses import loss_form, vector_loss
from .model_holder import HoldsTrainingModel
from .reduction import Mean, MeanAccumulator, combine

WEIGHTS = {"noise": 1.0}


class DenoisingPretraining(
    HoldsTrainingModel, LoggedGradientClipping, NonFiniteLossGuard, lightning.LightningModule
):
    def __init__(
        self,
        model_name: str,
        model_hparams: dict[str, Any],
        task: TaskConfig | dict[str, Any],
        neighbor_backend: str = "auto",
    ):
        super().__init__()
        self.task_cfg = task_config(task)
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "model_hparams": model_hparams,
                "task": asdict(self.task_cfg),
                "neighbor_backend": neighbor_backend,
            }
        )
        backbone = build_backbone(model_name, model_hparams)
        backbone.recompute_blocks = self.task_cfg.recompute_blocks
        with torch.random.fork_rng(devices=[]):  # the heads' initialisation does not depend on it
            potential = Potential(backbone, neighbor_backend=neighbor_backend)
        potential.energy_head.requires_grad_(False)  # no energies in denoising: not trained
        noise_head = build_noise_head(backbone, blocks=self.task_cfg.noise.head_blocks)
        dens = self.task_cfg.dens
        encoder = build_force_encoder(backbone) if dens.enabled and dens.force_encoding else None
        self.model = TrainingModel(potential, noise_head, encoder)
        self.seed = torch.initial_seed()
        self.val_terms = MeanAccumulator(("noise", "cosine"))

    def set_force_scale(self, scale: float) -> None:
        """The training force RMS (eV/Å), which the force encoder divides by."""
        if self.force_encoder is not None:
            self.force_encoder.set_force_scale(scale)

    def transfer_batch_to_device(self, batch: Graph, device: torch.device, dataloader_idx: int) -> Graph:
        return batch.to(device, dtype=self.dtype)

    def corrupt(self, batch: Graph, stream: int = PRETRAIN, step: int = 0) -> Corruption:
        noise = self.task_cfg.noise
        draws = draw(batch, self.seed, stream, step)
        return corrupt(batch, noise.sigma, draws, noise.sigma_max, noise.atom_fraction)

    def predict_noise(self, batch: Graph, noisy_pos: Tensor, encode: Tensor | None = None) -> Tensor:
        """Predicted ``eps / sigma`` [N, 3] at the corrupted positions (neighbours rebuilt there);
        with a force encoder, the labelled forces of the atoms in ``encode`` [N] are encoded."""
        return self.model.denoise(batch, noisy_pos, encode)["noise"]

    def losses(self, batch: Graph, stream: int = PRETRAIN, step: int = 0) -> dict[str, Mean]:
        """``noise`` (the error of ``eps / sigma`` in the form of ``task.loss.noise``) and ``cosine``,
        over the noised atoms."""
        corruption = self.corrupt(batch, stream, step)
        predicted = self.predict_noise(batch, corruption.pos, corruption.mask)
        form = loss_form(self.task_cfg, "noise")
        return {
            "noise": vector_loss(predicted, corruption.target, form, corruption.mask),
            "cosine": masked_cosine(predicted.detach(), corruption.target, corruption.mask),
        }

    def training_step(self, batch: Graph, batch_idx: int) -> Tensor:
        loss, logged = combine(self, self.losses(batch, PRETRAIN, self.global_step), WEIGHTS)
        if self.finite_loss(loss, batch, batch_idx):
            log_parts(self, "train", {"loss": logged["loss"], "cosine": logged["cosine"]}, batch.num_graphs)
        return loss

    def validation_step(self, batch: Graph, batch_idx: int) -> None:
        self.val_terms.update(self.losses(batch, PRETRAIN_VALIDATION))

    def on_validation_epoch_end(self) -> None:
        means = self.val_terms.compute()
        self.val_terms.reset()
        if "noise" in means:
            means["loss"] = means.pop("noise")
        log_epoch_means(self, "val", means, prog_bar=("loss", "cosine"))

    def configure_optimizers(self):
        groups = optim.param_groups(self, self.backbone, self.task_cfg.lr, 1.0)
        return optim.configure(self, groups, self.task_cfg)
