"""Structured config schemas and loading: packaged default ← user YAML ← dotted overrides.

Every key is declared here (the backbone's own keys by its ``Config`` dataclass, the trainer's by
``lightning.Trainer``), so a misspelt key is an error that names it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data.sampling import LABELLERS, METHODS
from .errors import InputError, first_line

QM9_METHODS = ("normal-mode", "perturb")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES = ("pretrain", "finetune")
OBJECTIVES = ("denoise", "supervised", "dens")  # what a pretraining run fits (task.objective)


@dataclass
class EmbeddedDataConfig:
    """The default data set the package samples with RDKit and caches when no file is given."""

    smiles: list[str] = field(
        default_factory=lambda: ["CCO", "CC(=O)O", "O=CC=CO", "c1ccccc1O", "CC(=O)Nc1ccccc1", "NCC(=O)O"]
    )
    smiles_file: str | None = None  # a SMILES file instead of `smiles`; "bundled": the packaged list
    limit: int | None = None  # use only the first `limit` molecules
    conformers: int = 4  # RDKit ETKDG conformers per molecule
    samples: int = 20  # sampled structures per conformer
    method: str = "perturb"  # normal-mode, md, perturb
    temperature: float = 300.0  # K, for normal-mode and md
    displacement: float = 0.03  # Å, std of the Cartesian perturbation (method perturb)
    labeller: str = "auto"  # auto (xtb when tblite is installed, else mmff), xtb, mmff, none
    seed: int = 7


@dataclass
class Qm9DataConfig:
    """Non-equilibrium conformations around the 130,831 QM9 DFT minima (``qm9pack``)."""

    molecules: int | None = None  # use the first N molecules (in a seeded order); null: all
    samples: int = 4  # conformations per molecule
    method: str = "normal-mode"  # normal-mode (MMFF94 Hessian, sampled once and cached), perturb (on the fly)
    temperature: float = 500.0  # K, for normal-mode
    displacement: float = 0.05  # Å, std of the Gaussian displacement (perturb)
    labeller: str = "none"  # normal-mode: none, xtb, mmff, auto (labels for supervised and dens pretraining)
    seed: int = 11


@dataclass
class DataConfig:
    path: str | None = None  # one file, split by `split`
    train: str | None = None  # or explicit files; val is carved from train when absent
    val: str | None = None
    test: str | None = None
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # fractions, or counts
    batch_size: int = 32
    eval_batch_size: int | None = None  # defaults to batch_size
    num_workers: int = 0
    units: str = "auto"  # energy unit (and length unit) of the files: "kcal/mol", "Hartree, Bohr", ...
    energy_key: str | None = None
    forces_key: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # npz/h5 array names: numbers, positions
    neighbor_backend: str = "auto"  # auto, cdist, vesin, torch_cluster
    min_distance: float = 0.5  # Å: atoms closer than this in a file are an error (overlap or wrong unit)
    source: str = "embedded"  # with no file: embedded (RDKit-sampled), qm9 (needs the qm9 extra)
    qm9: Qm9DataConfig = field(default_factory=Qm9DataConfig)
    embedded: EmbeddedDataConfig = field(default_factory=EmbeddedDataConfig)


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
class FinetuneConfig:
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0  # lr of the pretrained backbone relative to task.lr
    energy_head: str = "keep"  # keep: a pretrained model's energy head, where it has one; fresh: a new one
    freeze: list[str] = field(default_factory=list)  # backbone parts not trained: embedding, block0, ...


@dataclass
class CheckpointConfig:
    every_n_steps: int | None = 500  # also write checkpoints/last.ckpt every N optimizer steps; null: off


@dataclass
class RunConfig:
    seed: int = 0
    stage: str = "finetune"
    model: dict[str, Any] = field(default_factory=lambda: {"name": "schnet"})
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    trainer: dict[str, Any] = field(default_factory=dict)


def config_error(err: OmegaConfBaseException, where: str) -> InputError:
    message = first_line(err)
    key = getattr(err, "full_key", None)
    return InputError(f"{where}: {key}: {message}" if key else f"{where}: {message}")


def load_config(
    stage: str,
    config_file: str | list[str] | None = None,
    overrides: list[str] | None = None,
    base_model: dict[str, Any] | None = None,
) -> DictConfig:
    """Resolve the config of ``stage``: packaged default, then ``config_file`` (one file, or several
    merged in order), then ``key=value`` overrides; validate it; return it.

    ``base_model`` (a pretrained backbone's name and hyperparameters) replaces the packaged default's
    ``model`` section, so a finetune config inherits the pretrained architecture and only keys the
    user sets can differ from it (the runner refuses those).
    """
    if stage not in STAGES:
        raise InputError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    schema = OmegaConf.structured(RunConfig)
    default = load_yaml(CONFIG_DIR / f"{stage}.yaml")
    if base_model is not None:
        default.model = OmegaConf.create(dict(base_model))
    layers: list[tuple[str, DictConfig]] = [(str(CONFIG_DIR / f"{stage}.yaml"), default)]
    files = [config_file] if isinstance(config_file, str) else list(config_file or [])
    for file in files:
        layers.append((file, load_yaml(Path(file))))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise InputError(f"override {bad[0]!r}: expected dotted.key=value")
        try:
            layers.append(("overrides", OmegaConf.from_dotlist(overrides)))
        except OmegaConfBaseException as err:
            raise config_error(err, "overrides") from err
    cfg = schema
    for where, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise config_error(err, where) from err
    cfg.stage = stage
    if stage == "pretrain" and cfg.task.objective == "dens":
        cfg.task.dens.enabled = True  # DeNS pretraining is the DeNS auxiliary task on the pretraining set
    if base_model is not None and cfg.model.get("name") != base_model["name"]:
        raise InputError(
            f"model.name={cfg.model.get('name')!r} but the pretrained model (--from) holds a "
            f"{base_model['name']!r} backbone; finetune with the same backbone (drop the model.name override)"
        )
    validate(cfg)
    return cfg


def load_yaml(path: Path) -> DictConfig:
    if not path.exists():
        raise InputError(f"{path}: config file not found")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:
        raise InputError(f"{path}: not valid YAML ({first_line(err)})") from err
    if not isinstance(loaded, DictConfig):
        raise InputError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def model_hyperparameters(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The backbone name and its full hyperparameters (defaults filled in), checked by its Config."""
    from .models import BACKBONES

    model = OmegaConf.to_container(cfg.model, resolve=True)
    name = model.pop("name", None)
    if name not in BACKBONES:
        raise InputError(
            f"model.name: {name!r} is not a backbone; expected one of {', '.join(sorted(BACKBONES))}"
        )
    try:
        checked = OmegaConf.merge(OmegaConf.structured(BACKBONES[name].Config), model)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise InputError(f"config: model.{key}: {first_line(err)}") from err
    hyperparameters = OmegaConf.to_container(checked)
    try:
        BACKBONES[name].Config(**hyperparameters)  # the backbone's own range checks
    except ValueError as err:
        raise InputError(f"config: {err}") from err
    return name, hyperparameters


def validate(cfg: DictConfig) -> None:
    """Checks beyond types: ranges, choices, trainer keys, backbone keys."""
    import lightning

    from .tasks.faults import POLICIES
    from .tasks.losses import FORMS

    model_hyperparameters(cfg)
    accepted = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "callbacks", "logger"}
    for key in cfg.trainer:
        if key not in accepted:
            raise InputError(f"config: trainer.{key}: not an argument of lightning.Trainer")
    checks = [
        ("data.batch_size", cfg.data.batch_size >= 1, "an integer >= 1"),
        ("data.num_workers", cfg.data.num_workers >= 0, "an integer >= 0"),
        ("data.min_distance", cfg.data.min_distance >= 0, "a length in Å >= 0"),
        (
            "data.split",
            len(cfg.data.split) in (2, 3) and all(x >= 0 for x in cfg.data.split),
            "2 or 3 non-negative fractions or counts (train, val[, test])",
        ),
        (
            "data.neighbor_backend",
            cfg.data.neighbor_backend in ("auto", "cdist", "vesin", "torch_cluster"),
            "one of auto, cdist, vesin, torch_cluster",
        ),
        (
            "data.embedded.labeller",
            cfg.data.embedded.labeller in LABELLERS,
            "one of " + ", ".join(LABELLERS),
        ),
        (
            "data.embedded.method",
            cfg.data.embedded.method in METHODS,
            "one of " + ", ".join(METHODS),
        ),
        ("data.embedded.temperature", cfg.data.embedded.temperature > 0, "a temperature in K > 0"),
        ("data.embedded.samples", cfg.data.embedded.samples >= 1, "an integer >= 1"),
        ("data.embedded.conformers", cfg.data.embedded.conformers >= 1, "an integer >= 1"),
        ("data.source", cfg.data.source in ("embedded", "qm9"), "one of embedded, qm9"),
        ("data.qm9.samples", cfg.data.qm9.samples >= 1, "an integer >= 1"),
        ("data.qm9.displacement", cfg.data.qm9.displacement > 0, "a length in Å > 0"),
        ("data.qm9.method", cfg.data.qm9.method in QM9_METHODS, "one of " + ", ".join(QM9_METHODS)),
        ("data.qm9.temperature", cfg.data.qm9.temperature > 0, "a temperature in K > 0"),
        (
            "data.qm9.labeller",
            cfg.data.qm9.labeller == "none"
            or (cfg.data.qm9.labeller in LABELLERS and cfg.data.qm9.method == "normal-mode"),
            "one of " + ", ".join(LABELLERS) + " (labels need data.qm9.method=normal-mode)",
        ),
        ("task.noise.sigma", cfg.task.noise.sigma > 0, "a length in Å > 0"),
        (
            "task.noise.sigma_max",
            cfg.task.noise.sigma_max is None or cfg.task.noise.sigma_max >= cfg.task.noise.sigma,
            "null or >= task.noise.sigma",
        ),
        ("task.noise.atom_fraction", 0 < cfg.task.noise.atom_fraction <= 1, "in (0, 1]"),
        ("task.dens.probability", 0 <= cfg.task.dens.probability <= 1, "in [0, 1]"),
        ("task.dens.corrupt_ratio", 0 < cfg.task.dens.corrupt_ratio <= 1, "in (0, 1]"),
        ("task.dens.sigma", cfg.task.dens.sigma > 0, "a length in Å > 0"),
        (
            "task.dens.sigma_max",
            cfg.task.dens.sigma_max is None or cfg.task.dens.sigma_max >= cfg.task.dens.sigma,
            "null or >= task.dens.sigma",
        ),
        ("task.dens.weight", cfg.task.dens.weight >= 0, "a non-negative number"),
        ("task.dens.decay", cfg.task.dens.decay in ("linear", "none"), "one of linear, none"),
        ("task.dens.head_blocks", cfg.task.dens.head_blocks >= 0, "an integer >= 0"),
        ("task.noise.head_blocks", cfg.task.noise.head_blocks >= 0, "an integer >= 0"),
        (
            "task.dens.diagnostics_every_n_steps",
            cfg.task.dens.diagnostics_every_n_steps >= 0,
            "an integer >= 0 (0: off)",
        ),
        *[(f"task.loss.{k}", cfg.task.loss[k] in FORMS, "one of " + ", ".join(FORMS)) for k in cfg.task.loss],
        ("task.lr", cfg.task.lr > 0, "a positive number"),
        ("task.energy_weight", cfg.task.energy_weight >= 0, "a non-negative number"),
        ("task.forces_weight", cfg.task.forces_weight >= 0, "a non-negative number"),
        (
            "task.scheduler",
            cfg.task.scheduler in ("cosine", "plateau", "none"),
            "one of cosine, plateau, none",
        ),
        ("task.warmup_steps", cfg.task.warmup_steps >= 0, "an integer >= 0"),
        ("task.nonfinite_loss", cfg.task.nonfinite_loss in POLICIES, "one of " + ", ".join(POLICIES)),
        ("task.ema_decay", cfg.task.ema_decay is None or 0 <= cfg.task.ema_decay < 1, "null or in [0, 1)"),
        ("finetune.backbone_lr_scale", cfg.finetune.backbone_lr_scale >= 0, "a non-negative number"),
        ("finetune.energy_head", cfg.finetune.energy_head in ("keep", "fresh"), "one of keep, fresh"),
        (
            "checkpoint.every_n_steps",
            cfg.checkpoint.every_n_steps is None or cfg.checkpoint.every_n_steps >= 1,
            "null or an integer >= 1",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise InputError(
                f"config: {key}: {OmegaConf.select(cfg, key)!r} is out of range; expected {expected}"
            )
    embedded = cfg.data.embedded
    if embedded.smiles and embedded.smiles_file:
        raise InputError(
            f"config: data.embedded.smiles and data.embedded.smiles_file={embedded.smiles_file!r} are both "
            "set; give one (add data.embedded.smiles_file=null to use the SMILES list)"
        )
    uses_embedded = cfg.data.source == "embedded" and not cfg.data.path and not cfg.data.train
    if uses_embedded and not embedded.smiles and not embedded.smiles_file:
        raise InputError(
            "config: data.embedded.smiles is empty and data.embedded.smiles_file is null; give one"
        )
    check_objective(cfg)
    check_backbone_supports(cfg)
    unbounded = cfg.trainer.get("max_epochs") == -1 and cfg.trainer.get("max_steps", -1) in (None, -1)
    decaying = dens_auxiliary(cfg) and cfg.task.dens.decay == "linear"
    if unbounded and (cfg.task.scheduler == "cosine" or decaying):
        what = "task.scheduler=cosine" if cfg.task.scheduler == "cosine" else "task.dens.decay=linear"
        raise InputError(
            f"config: trainer.max_epochs=-1 without trainer.max_steps leaves training unbounded, but {what} "
            "needs its length: set trainer.max_steps, or task.scheduler=plateau or none, task.dens.decay=none"
        )
    qm9_unlabelled = cfg.data.qm9.labeller == "none" or cfg.stage == "finetune"
    default_data = not (cfg.data.path or cfg.data.train)
    if cfg.data.source == "qm9" and labelled(cfg) and qm9_unlabelled and default_data:
        what = "finetune" if cfg.stage == "finetune" else f"task.objective={cfg.task.objective}"
        raise InputError(
            f"config: data.source: qm9 has no energy or force labels, which {what} needs; pretrain on it "
            "with task.objective=denoise, or label it with data.qm9.labeller=xtb"
        )
    if labelled(cfg) and cfg.task.energy_weight == 0 and cfg.task.forces_weight == 0:
        raise InputError("config: task.energy_weight and task.forces_weight are both 0; nothing to train")


def labelled(cfg: DictConfig) -> bool:
    """Whether the run fits energies and forces: finetuning, or a supervised or DeNS pretraining."""
    return cfg.stage == "finetune" or cfg.task.objective in ("supervised", "dens")


def dens_auxiliary(cfg: DictConfig) -> bool:
    """Whether DeNS runs as an auxiliary task beside energies and forces (a DeNS finetune or the
    ``dens`` pretraining objective), rather than as force-encoded denoising pretraining."""
    return bool(cfg.task.dens.enabled) and labelled(cfg)


def check_objective(cfg: DictConfig) -> None:
    """``task.objective``: one of :data:`OBJECTIVES` when pretraining, unset when finetuning; a labelled
    objective on the embedded set needs a labeller."""
    objective = cfg.task.objective
    if cfg.stage == "finetune":
        if objective is not None:
            raise InputError(
                f"config: task.objective={objective!r} applies to pretrain; finetune always fits energies "
                "and forces (DeNS beside them: task.dens.enabled=true)"
            )
        return
    if objective not in OBJECTIVES:
        raise InputError(f"config: task.objective: {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if objective == "supervised" and cfg.task.dens.enabled:
        raise InputError(
            "config: task.dens.enabled=true with task.objective=supervised; for DeNS pretraining set "
            "task.objective=dens"
        )
    embedded = cfg.data.source == "embedded" and not (cfg.data.path or cfg.data.train)
    if objective != "denoise" and embedded and cfg.data.embedded.labeller == "none":
        raise InputError(
            f"config: task.objective={objective} needs energies and forces, but data.embedded.labeller is "
            "'none'; set data.embedded.labeller=xtb (or mmff, auto) or give a labelled data.path"
        )


def check_backbone_supports(cfg: DictConfig) -> None:
    """DeNS's force encoding and the noise heads' message-passing blocks need the backbone's own."""
    from .models import BACKBONES

    name = cfg.model.get("name")
    if name not in BACKBONES:
        return
    backbone = BACKBONES[name]
    if cfg.task.dens.enabled and cfg.task.dens.force_encoding and not backbone.supports_force_encoding:
        raise InputError(
            f"config: task.dens.force_encoding: model.name={name!r} cannot take encoded forces; "
            "set task.dens.force_encoding=false or use a backbone that can"
        )
    blocks = {"task.noise.head_blocks": cfg.task.noise.head_blocks}
    if dens_auxiliary(cfg):
        blocks["task.dens.head_blocks"] = cfg.task.dens.head_blocks
    for key, count in blocks.items():
        if count > 0 and not backbone.supports_head_blocks:
            raise InputError(
                f"config: {key}={count}: model.name={name!r} has no message-passing block for a noise "
                f"head (Backbone.make_head_block); set {key}=0"
            )


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
