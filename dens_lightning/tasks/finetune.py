"""EnergyForceTask: supervised training on energies and forces (the finetune stage)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning
import torch
from torch import Tensor

from ..data.graph import Graph
from ..data.replay import ReplayBatches
from ..errors import InputError
from ..metrics import EnergyForceMetrics
from ..models.encoders import build_force_encoder
from ..models.heads import build_noise_head
from ..models.potential import Potential
from ..models.training_model import TrainingModel
from . import optim
from .clipping import LoggedGradientClipping, gradient_norm
from .config import FinetuneConfig, TaskConfig, task_config, typed
from .dens import DENS, Corruption, corrupt, dens_weight, draw, select_structures, structures_with
from .faults import NonFiniteLossGuard
from .logging import log_epoch_means, log_parts
from .losses import loss_form, scalar_errors, vector_loss
from .model_holder import HoldsTrainingModel
from .reduction import Mean, MeanAccumulator, combine, masked_sum


def freeze_parts(backbone: torch.nn.Module, names: list[str]) -> None:
    """Stop training the backbone parts ``names`` (:meth:`~dens_lightning.models.base.Backbone.parts`)."""
    if not names:
        return
    parts = backbone.parts()
    unknown = [name for name in names if name not in parts]
    if unknown:
        raise InputError(
            f"config: finetune.freeze: {unknown[0]!r} is not a part of {backbone.name}; "
            f"expected some of {', '.join(parts)}"
        )
    for name in names:
        parts[name].requires_grad_(False)


class EnergyForceTask(
    HoldsTrainingModel, LoggedGradientClipping, NonFiniteLossGuard, lightning.LightningModule
):
    """Loss ``w_E · mean(err_E) + w_F · mean(err_F)`` with errors in the form ``task.loss`` chooses
    (:mod:`.losses`): ``norm`` (default: ``|E - E_ref| / N / s`` per structure, ``‖F_i - F_ref,i‖ / s``
    per atom) or ``squared``; ``s`` is the training set's force RMS, so terms are of order one
    whatever the units.

    Forces are ``-dE/dpos`` by autograd, with ``create_graph`` only in training.

    With ``task.dens.enabled``, DeNS (Liao et al. 2024) runs as an auxiliary task in training: each
    structure is chosen with probability ``p``, each atom of a chosen structure corrupted with
    probability ``corrupt_ratio`` by N(0, sigma²) noise (fixed atoms never); the labelled forces of
    the corrupted atoms are encoded into the backbone's input; a separate noise head predicts
    ``eps / sigma`` for them. The loss becomes ``w_E L_E + w_F L_F(uncorrupted atoms) + w_dens(t)
    L_noise(corrupted atoms)``, with one forward pass at the corrupted positions: ``L_E`` covers the
    structures with no corrupted atom (``energy_on_corrupted=true``: every structure, fitted to its
    original label, as the reference code does). Every term is a masked mean that stays in the graph
    when its mask is empty (no DDP hang). Validation and test never corrupt nor encode.

    Diagnostics of a DeNS step (logged, not trained on): the force MAE on the atoms of clean
    structures and on the uncorrupted atoms of corrupted ones, and every
    ``dens.diagnostics_every_n_steps`` steps the gradient norm of each weighted term.

    Every mean is over the whole step or evaluation set on all devices (:mod:`.reduction`), and the
    DeNS draws are keyed by structure (:mod:`.dens`): W devices of batch B train like one of W·B.
    """

    def __init__(
        self,
        model_name: str,
        model_hparams: dict[str, Any],
        task: TaskConfig | dict[str, Any],
        finetune: FinetuneConfig | dict[str, Any] | None = None,
        neighbor_backend: str = "auto",
    ):
        super().__init__()
        self.task_cfg, self.finetune_cfg = task_config(task), typed(FinetuneConfig, finetune)
        self.save_hyperparameters(
            {
                "model_name": model_name,
                "model_hparams": model_hparams,
                "task": asdict(self.task_cfg),
                "finetune": asdict(self.finetune_cfg),
                "neighbor_backend": neighbor_backend,
            }
        )
        potential = Potential.build(model_name, model_hparams, neighbor_backend=neighbor_backend)
        potential.recompute_blocks(self.task_cfg.recompute_blocks)
        self.model = TrainingModel(potential)
        self.register_buffer("loss_scale", torch.ones(()))
        self.val_metrics = EnergyForceMetrics()
        self.test_metrics = EnergyForceMetrics()
        self.val_terms = MeanAccumulator(("energy_loss", "forces_loss"))
        self.test_terms = MeanAccumulator(("energy_loss", "forces_loss"))
        self.test_results: dict[str, float] = {}  # the last test epoch's metrics (every rank)
        if self.finetune_cfg.freeze_backbone:
            self.potential.backbone.requires_grad_(False)
        freeze_parts(self.potential.backbone, list(self.finetune_cfg.freeze))
        self.dens_seed = torch.initial_seed()
        self.replay: ReplayBatches | None = None  # attached by the runner with finetune.replay
        if self.finetune_cfg.replay.weight > 0:
            # eV per element, added to the replay energies (their level of theory's offsets)
            self.register_buffer("replay_offsets", torch.zeros(potential.backbone.config.max_z + 1))
        dens = self.task_cfg.dens
        if dens.enabled:
            # built from a forked RNG: the potential's initialisation and the data order do not change
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.dens_seed + 1)
                self.model.noise_head = build_noise_head(
                    potential.backbone, differentiate=False, blocks=dens.head_blocks
                )
                if dens.force_encoding:
                    self.model.force_encoder = build_force_encoder(potential.backbone)

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

    @property
    def loss_weights(self) -> dict[str, float]:
        weights = {"energy_loss": self.task_cfg.energy_weight, "forces_loss": self.task_cfg.forces_weight}
        return {k: float(w) for k, w in weights.items() if w > 0}

    def losses(
        self,
        out: dict[str, Tensor],
        batch: Graph,
        structures: Tensor | None = None,
        atoms: Tensor | None = None,
    ) -> dict[str, Mean]:
        """The energy and force terms that have weight, per structure (energy per atom) and per atom
        (or force component), in units of the scale; ``structures`` [B] and ``atoms`` [N] (bool)
        restrict them (DeNS)."""
        scale = self.loss_scale
        terms: dict[str, Mean] = {}
        if self.task_cfg.energy_weight > 0:
            error = (out["energy"] - batch.energy).to(batch.pos.dtype)  # float64 totals, then the model's
            per_atom = error / batch.num_atoms.to(error.dtype)
            errors = scalar_errors(per_atom / scale, loss_form(self.task_cfg, "energy"))
            terms["energy_loss"] = masked_sum(errors, structures)
        if self.uses_forces:
            form = loss_form(self.task_cfg, "forces")
            terms["forces_loss"] = vector_loss(out["forces"] / scale, batch.forces / scale, form, atoms)
        return terms

    def training_step(self, batch: Graph, batch_idx: int) -> Tensor:
        if self.dens_enabled:
            loss, logged = self.dens_losses(batch)
        else:
            out = self.potential(batch, compute_forces=self.uses_forces, create_graph=True)
            terms, weights = self.with_replay(self.losses(out, batch), self.loss_weights)
            loss, logged = combine(self, terms, weights)
        if self.finite_loss(loss, batch, batch_idx):
            log_parts(self, "train", logged, batch.num_graphs)
        return loss

    def dens_corruption(self, batch: Graph, step: int = 0) -> Corruption:
        """The DeNS corruption of ``batch`` at training step ``step`` (draws keyed per structure)."""
        cfg = self.task_cfg.dens
        draws = draw(batch, self.dens_seed, DENS, step)
        chosen = select_structures(draws, cfg.probability if step >= cfg.start_step else 0.0)
        return corrupt(batch, cfg.sigma, draws, cfg.sigma_max, cfg.corrupt_ratio, structures=chosen)

    def dens_forward(self, batch: Graph, corruption: Corruption) -> tuple[dict[str, Tensor], Tensor]:
        """Energies, forces and predicted noise at the corrupted positions, with the corrupted atoms'
        labelled forces encoded. Without a corrupted atom the batch (and its neighbour list) is used
        as is, so ``probability=0`` trains exactly like plain energy/force training."""
        mask = corruption.mask
        out = self.model.denoise(batch, corruption.pos if bool(mask.any()) else None, mask, with_energy=True)
        return out, out["noise"]

    def dens_terms(self, batch: Graph, corruption: Corruption) -> dict[str, Mean]:
        """The energy and force terms (restricted as the class docstring says), ``noise_loss`` over the
        corrupted atoms; logged only: ``corrupted_fraction`` and the force MAE (meV/Å) on the atoms
        of clean structures (``forces_mae_clean``) and on the uncorrupted atoms of corrupted
        structures (``forces_mae_beside_noise``)."""
        out, predicted = self.dens_forward(batch, corruption)
        mask = corruption.mask
        corrupted_structure = structures_with(mask, batch)
        structures = None if self.task_cfg.dens.energy_on_corrupted else ~corrupted_structure
        in_corrupted = corrupted_structure[batch.batch]  # atoms of corrupted structures
        atoms = ~mask if self.task_cfg.dens.forces_on_corrupted else ~in_corrupted
        terms = self.losses(out, batch, structures=structures, atoms=atoms)
        noise_form = loss_form(self.task_cfg, "noise")
        terms["noise_loss"] = vector_loss(predicted, corruption.target, noise_form, mask)
        terms["corrupted_fraction"] = masked_sum(mask.to(predicted.dtype))
        errors = 1e3 * (out["forces"].detach() - batch.forces).abs()
        terms["forces_mae_clean"] = masked_sum(errors, ~in_corrupted)
        terms["forces_mae_beside_noise"] = masked_sum(errors, in_corrupted & ~mask)
        return terms

    def dens_losses(self, batch: Graph) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, logged)`` of one DeNS training step."""
        cfg = self.task_cfg.dens
        terms = self.dens_terms(batch, self.dens_corruption(batch, self.global_step))
        weight = dens_weight(cfg.weight, cfg.decay, self.global_step, optim.total_steps(self))
        terms, weights = self.with_replay(terms, {**self.loss_weights, "noise_loss": weight})
        parts: dict[str, Tensor] = {}
        loss, logged = combine(self, terms, weights, parts=parts)
        logged["dens_weight"] = logged["loss"].new_tensor(weight)
        every = cfg.diagnostics_every_n_steps
        # on the steps Lightning logs when ``every`` is a multiple of trainer.log_every_n_steps
        if every and self.training and (self.global_step + 1) % every == 0 and torch.is_grad_enabled():
            logged |= self.term_gradient_norms(parts)
        return loss, logged

    def with_replay(
        self, terms: dict[str, Mean], weights: dict[str, float]
    ) -> tuple[dict[str, Mean], dict[str, float]]:
        """``terms`` and ``weights`` with, in training with a replay set attached, the energy and
        force terms of this step's replay batch as ``replay_energy_loss`` and ``replay_forces_loss``,
        weighted ``finetune.replay.weight`` times the task's weights."""
        if self.replay is None or not self.training:
            return terms, weights
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        batch = self.replay.batch(self.global_step, rank, world).to(self.device, dtype=self.dtype)
        out = self.potential(batch, compute_forces=self.uses_forces, create_graph=True)
        per_atom = self.replay_offsets[batch.z].to(out["energy"].dtype)
        offsets = torch.zeros_like(out["energy"]).index_add_(0, batch.batch, per_atom)
        replay = self.losses({**out, "energy": out["energy"] + offsets}, batch)
        weight = self.finetune_cfg.replay.weight
        return (
            terms | {f"replay_{name}": term for name, term in replay.items()},
            weights | {f"replay_{name}": weight * self.loss_weights[name] for name in replay},
        )

    def term_gradient_norms(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        """``grad_norm_<term>``: the norm of each weighted term's gradient with respect to the
        backbone's parameters on this process (one extra backward pass per term; the step's own
        backward is unchanged)."""
        parameters = [p for p in self.potential.backbone.parameters() if p.requires_grad]
        norms = {}
        for name, part in parts.items():
            grads = torch.autograd.grad(part, parameters, retain_graph=True, allow_unused=True)
            norms[f"grad_norm_{name.removesuffix('_loss')}"] = gradient_norm(grads)
        return norms

    def _evaluate(self, batch: Graph, metrics: EnergyForceMetrics, terms: MeanAccumulator) -> None:
        with torch.enable_grad():
            out = self.potential(batch, compute_forces=True, create_graph=False)
        if batch.energy is not None and (batch.forces is not None or not self.uses_forces):
            terms.update(self.losses(out, batch))
        metrics.update(out["energy"], batch.energy, batch.num_atoms, out["forces"], batch.forces)

    def validation_step(self, batch: Graph, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_terms)

    def test_step(self, batch: Graph, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_terms)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics, self.val_terms)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_epoch("test", self.test_metrics, self.test_terms)

    def _log_epoch(self, prefix: str, metrics: EnergyForceMetrics, terms: MeanAccumulator) -> dict:
        """Log the epoch's errors and loss terms (means over the whole set on every device)."""
        means = terms.compute()
        terms.reset()
        if means:
            means["loss"] = sum(w * means.get(k, 0.0) for k, w in self.loss_weights.items())
        errors = metrics.compute()
        metrics.reset()
        log_epoch_means(self, prefix, {**means, **errors}, prog_bar=("forces_mae_meV_per_A",))
        return errors

    def configure_optimizers(self):
        groups = optim.param_groups(
            self, self.potential.backbone, self.task_cfg.lr, self.finetune_cfg.backbone_lr_scale
        )
        return optim.configure(self, groups, self.task_cfg)
