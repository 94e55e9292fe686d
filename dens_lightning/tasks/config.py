"""The ``task`` and ``finetune`` sections of a run's config: their schemas and their own checks
(choices from the modules that own them: loss forms, schedulers, fault policies, DeNS decays).

A task receives its section typed (:class:`TaskConfig`), or as the plain dict Lightning saves with
a checkpoint, which :func:`task_config` reads into one: every key has one default, the one here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from omegaconf import DictConfig, OmegaConf

from ..errors import one_of
from .dens import DECAYS
from .faults import POLICIES
from .losses import FORMS
from .optim import SCHEDULERS

OBJECTIVES = ("denoise", "supervised", "dens")  # what a pretraining run fits (task.objective)
ENERGY_HEADS = ("keep", "fresh")  # finetune.energy_head
HEAD_INITS = ("random", "zero")  # finetune.head_init
REPLAY_LABELLERS = ("xtb", "mmff")  # finetune.replay.labeller


@dataclass
class NoiseConfig:
    """Denoising pretraining: eps ~ N(0, sigma²) per atom and axis, target eps / sigma."""

    sigma: float = 0.1  # Å; with sigma_max, the low end of a log-uniform range per structure
    sigma_max: float | None = None  # Å; null: fixed sigma
    atom_fraction: float = 1.0  # probability that an atom is corrupted (the loss covers those)
    head_blocks: int = 0  # message-passing blocks of the noise head before its readout


@dataclass
class DensConfig:
    """DeNS (Liao et al. 2024): denoising partially corrupted non-equilibrium structures, with their
    forces encoded: an auxiliary task beside energies and forces (finetune, and the ``dens``
    pretraining objective; the keys marked "auxiliary"), or with the ``denoise`` objective
    force-encoded denoising with ``task.noise``'s corruption."""

    enabled: bool = False
    probability: float = 0.25  # auxiliary: chance that a structure is corrupted (MD17 setting)
    start_step: int = 0  # auxiliary: no structure is corrupted before this optimizer step (plain training)
    corrupt_ratio: float = 0.25  # auxiliary: chance that an atom of such a structure is corrupted
    sigma: float = 0.05  # Å, std of the noise; with sigma_max the low end of a log-uniform range
    sigma_max: float | None = None  # Å; per structure, log-uniform in [sigma, sigma_max]; null: fixed
    weight: float = 5.0  # auxiliary: weight of the noise loss
    head_blocks: int = 0  # auxiliary: message-passing blocks of the noise head before its readout
    decay: str = "linear"  # auxiliary: linear (weight falls to 0 over training, MD17) or none
    force_encoding: bool = True  # encode the corrupted atoms' forces (false: the paper's ablation)
    energy_on_corrupted: bool = False  # auxiliary: the original energy also supervises corrupted structures
    forces_on_corrupted: bool = False  # auxiliary: uncorrupted atoms of corrupted structures supervise forces
    diagnostics_every_n_steps: int = 100  # auxiliary: log each term's gradient norm every N steps; 0: off


@dataclass
class LossConfig:
    """The form of each loss term (:mod:`dens_lightning.tasks.losses`): squared, or norm (the DeNS
    reference's L1 on energies and per-atom error-vector norms on forces and noise)."""

    energy: str = "norm"
    forces: str = "norm"
    noise: str = "norm"


@dataclass
class TaskConfig:
    # pretrain only: denoise (label-free), supervised (energies and forces), dens (supervised + DeNS)
    objective: str | None = None
    lr: float = 5e-4
    weight_decay: float = 0.0
    energy_weight: float = 1.0  # on per-atom energy, in units of the energy scale
    forces_weight: float = 80.0  # on forces, in units of the energy scale per Å
    loss: LossConfig = field(default_factory=LossConfig)
    scheduler: str = "cosine"  # cosine, plateau, none
    warmup_steps: int = 50
    min_lr_ratio: float = 0.01  # cosine floor, as a fraction of lr
    plateau_patience: int = 10  # epochs
    plateau_factor: float = 0.5
    ema_decay: float | None = 0.99  # exponential moving average of the weights; null disables
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    dens: DensConfig = field(default_factory=DensConfig)
    nonfinite_loss: str = "stop"  # a NaN or infinite training loss: stop (naming step and batch) or skip
    recompute_blocks: bool = False  # recompute each block in the backward pass: less memory, more time


@dataclass
class ReplayConfig:
    """Replay against forgetting: batches of labelled pretraining data trained beside the finetuning
    data (:mod:`dens_lightning.replay`)."""

    weight: float = 0.0  # weight of the replay loss relative to the finetuning loss; 0: off
    data: str | None = None  # labelled structures: a file or store, or "pretraining" (the packaged set)
    labeller: str = "xtb"  # with data=pretraining: xtb or mmff (the labels the pretrained model learned)
    batch_size: int = 16  # replay structures per step (per device)


@dataclass
class FinetuneConfig:
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0  # lr of the pretrained backbone relative to task.lr
    energy_head: str = "keep"  # keep: a pretrained model's energy head, where it has one; fresh: a new one
    head_init: str = "random"  # a new energy head on a pretrained backbone: random, or zero output layer
    freeze: list[str] = field(default_factory=list)  # backbone parts not trained: embedding, block0, ...
    replay: ReplayConfig = field(default_factory=ReplayConfig)


Section = TypeVar("Section")


def typed(schema: type[Section], values: dict | DictConfig | Section | None) -> Section:
    """``values`` (a dict, as saved with a checkpoint, possibly missing keys) as the dataclass
    ``schema``, every missing key at its default."""
    if isinstance(values, schema):
        return values
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values or {}))


# What a task config saved without these keys was trained with (before they existed).
LEGACY = {"loss": {"energy": "squared", "forces": "squared", "noise": "squared"}}
LEGACY_DENS = {"forces_on_corrupted": True}


def task_config(values: dict | DictConfig | TaskConfig) -> TaskConfig:
    """A task's section as a :class:`TaskConfig`; a config saved without ``loss`` or without
    ``dens.forces_on_corrupted`` (models and checkpoints written before those keys) keeps the
    squared loss form and the supervision of uncorrupted atoms it was trained with."""
    if isinstance(values, TaskConfig):
        return values
    values = OmegaConf.create(dict(values))
    legacy = OmegaConf.from_dotlist(legacy_overrides(OmegaConf.create({"task": values})))
    return typed(TaskConfig, OmegaConf.merge(values, legacy.get("task") or {}))


def legacy_overrides(saved: DictConfig) -> list[str]:
    """``task.*=value`` overrides that give a run config saved before a key of :data:`LEGACY` or
    :data:`LEGACY_DENS` existed the value it trained with (a resumed run goes on as it began)."""
    task = saved.get("task") or {}
    overrides = [
        f"task.{key}.{name}={value}"
        for key, values in LEGACY.items()
        if key not in task
        for name, value in values.items()
    ]
    dens = task.get("dens") or {}
    return overrides + [f"task.dens.{key}={value}" for key, value in LEGACY_DENS.items() if key not in dens]


def task_checks(task: DictConfig) -> list[tuple[str, bool, str]]:
    """(key, whether its value is acceptable, what is expected) for each checked ``task`` key."""
    noise, dens = task.noise, task.dens
    return [
        ("task.noise.sigma", noise.sigma > 0, "a length in Å > 0"),
        (
            "task.noise.sigma_max",
            noise.sigma_max is None or noise.sigma_max >= noise.sigma,
            "null or >= task.noise.sigma",
        ),
        ("task.noise.atom_fraction", 0 < noise.atom_fraction <= 1, "in (0, 1]"),
        ("task.dens.probability", 0 <= dens.probability <= 1, "in [0, 1]"),
        ("task.dens.start_step", dens.start_step >= 0, "an integer >= 0"),
        ("task.dens.corrupt_ratio", 0 < dens.corrupt_ratio <= 1, "in (0, 1]"),
        ("task.dens.sigma", dens.sigma > 0, "a length in Å > 0"),
        (
            "task.dens.sigma_max",
            dens.sigma_max is None or dens.sigma_max >= dens.sigma,
            "null or >= task.dens.sigma",
        ),
        ("task.dens.weight", dens.weight >= 0, "a non-negative number"),
        ("task.dens.decay", dens.decay in DECAYS, one_of(DECAYS)),
        ("task.dens.head_blocks", dens.head_blocks >= 0, "an integer >= 0"),
        ("task.noise.head_blocks", noise.head_blocks >= 0, "an integer >= 0"),
        (
            "task.dens.diagnostics_every_n_steps",
            dens.diagnostics_every_n_steps >= 0,
            "an integer >= 0 (0: off)",
        ),
        *[(f"task.loss.{k}", task.loss[k] in FORMS, one_of(FORMS)) for k in task.loss],
        ("task.lr", task.lr > 0, "a positive number"),
        ("task.energy_weight", task.energy_weight >= 0, "a non-negative number"),
        ("task.forces_weight", task.forces_weight >= 0, "a non-negative number"),
        ("task.scheduler", task.scheduler in SCHEDULERS, one_of(SCHEDULERS)),
        ("task.warmup_steps", task.warmup_steps >= 0, "an integer >= 0"),
        ("task.nonfinite_loss", task.nonfinite_loss in POLICIES, one_of(POLICIES)),
        ("task.ema_decay", task.ema_decay is None or 0 <= task.ema_decay < 1, "null or in [0, 1)"),
    ]


def finetune_checks(finetune: DictConfig) -> list[tuple[str, bool, str]]:
    """(key, whether its value is acceptable, what is expected) for each checked ``finetune`` key."""
    replay = finetune.replay
    return [
        ("finetune.backbone_lr_scale", finetune.backbone_lr_scale >= 0, "a non-negative number"),
        ("finetune.energy_head", finetune.energy_head in ENERGY_HEADS, one_of(ENERGY_HEADS)),
        ("finetune.head_init", finetune.head_init in HEAD_INITS, one_of(HEAD_INITS)),
        ("finetune.replay.weight", replay.weight >= 0, "a non-negative number (0: off)"),
        (
            "finetune.replay.data",
            replay.weight == 0 or bool(replay.data),
            'a labelled structure file or store, or "pretraining", when finetune.replay.weight > 0',
        ),
        ("finetune.replay.labeller", replay.labeller in REPLAY_LABELLERS, one_of(REPLAY_LABELLERS)),
        ("finetune.replay.batch_size", replay.batch_size >= 1, "an integer >= 1"),
    ]
