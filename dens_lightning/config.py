"""The run's config: its schema, loading (packaged default ← user YAML ← dotted overrides) and checks.

Each section is declared and checked by the layer that uses it: ``data`` in :mod:`.data.config`,
``task`` and ``finetune`` in :mod:`.tasks.config`, ``model`` by the backbone's ``Config`` dataclass,
``trainer`` by ``lightning.Trainer``'s arguments; this module holds the run-level keys and the
checks across sections, so a misspelt key or a value out of range is an error that names it.

A key's walk: ``cli`` (argv → :func:`load_config`) → ``runner`` (passes each section on) → the
layer that owns it (``data.*`` → ``AtomsDataModule``; ``task.*`` → the task, read as a typed
:class:`.tasks.config.TaskConfig`; ``model.*`` → the backbone's ``Config``; ``trainer.*`` → ``Trainer``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .data.config import DataConfig, check_embedded_smiles, data_checks, uses_default_data
from .errors import InputError, first_line, one_of
from .metrics import METRIC_NAMES
from .tasks.config import OBJECTIVES, FinetuneConfig, TaskConfig, finetune_checks, task_checks

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGES = ("pretrain", "finetune")
# checkpoint.monitor: the validation loss or the latest validation, and in labelled runs a validation error
UNLABELLED_MONITORS = ("loss", "last")
CHECKPOINT_MONITORS = (*UNLABELLED_MONITORS, *METRIC_NAMES)


@dataclass
class CheckpointConfig:
    every_n_steps: int | None = 500  # also write checkpoints/last.ckpt every N optimizer steps; null: off
    monitor: str = "loss"  # the validation value that picks the kept weights (CHECKPOINT_MONITORS)


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
    base_source: str = "the pretrained model (--from)",
) -> DictConfig:
    """Resolve the config of ``stage``: packaged default, then ``config_file`` (one file, or several
    merged in order), then ``key=value`` overrides; validate it; return it.

    ``base_model`` (a pretrained backbone's name and hyperparameters) replaces the packaged default's
    ``model`` section, so a finetune config inherits the pretrained architecture; a key the user sets
    to another value is refused (:func:`check_architecture`, naming ``base_source``).
    """
    if stage not in STAGES:
        raise InputError(f"stage {stage!r}: expected one of {', '.join(STAGES)}")
    schema = OmegaConf.structured(RunConfig)
    default = load_yaml(CONFIG_DIR / f"{stage}.yaml")
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
    if base_model is not None:
        default.model = OmegaConf.create(dict(base_model))
    else:
        default.model = packaged_model(default.model, [layer for _, layer in layers[1:]])
    cfg = schema
    for where, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise config_error(err, where) from err
    cfg.stage = stage
    if stage == "pretrain" and cfg.task.objective == "dens":
        cfg.task.dens.enabled = True  # DeNS pretraining is the DeNS auxiliary task on the pretraining set
    if base_model is not None:
        check_architecture(cfg, base_model, base_source)
    validate(cfg)
    return cfg


def packaged_model(model: DictConfig, layers: list[DictConfig]) -> DictConfig:
    """The packaged default's ``model`` section, or only its cutoff where a user layer names another
    backbone: the packaged sizes (e.g. PaiNN's width for ``pretrain``) belong to the packaged backbone,
    so ``model.name=schnet`` gives SchNet at its own defaults, not SchNet with PaiNN's keys."""
    sections = [layer.get("model") for layer in layers]
    names = [section.name for section in sections if isinstance(section, DictConfig) and "name" in section]
    if not names or names[-1] == model.get("name"):
        return model
    return OmegaConf.create({key: model[key] for key in ("name", "cutoff") if key in model})


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
    except TypeError as err:  # a list where the config holds a mapping, or the reverse
        raise InputError(f"config: model: {first_line(err)} (a list where a mapping is expected?)") from err
    hyperparameters = OmegaConf.to_container(checked)
    try:
        BACKBONES[name].Config(**hyperparameters)  # the backbone's own range checks
    except ValueError as err:
        raise InputError(f"config: {err}") from err
    return name, hyperparameters


# model keys that add a term to the energy without touching the backbone's tensors: a finetune may set them
ENERGY_TERMS = ("zbl", "zbl_switch", "zbl_reach", "zbl_data_switch")


def check_architecture(cfg: DictConfig, architecture: dict[str, Any], source: Any) -> None:
    """Refuse a config whose backbone differs from a pretrained one (``architecture``: its name and
    hyperparameters; ``source``: where it was read), naming the first difference. The name is
    compared first, so a wrong ``model.name`` is reported as such, not as keys foreign to it."""
    name = cfg.model.get("name")
    if name != architecture["name"]:
        raise InputError(
            f"model.name={name!r} but {source} holds a {architecture['name']!r} backbone; "
            "finetune with the same backbone (drop the model.name override)"
        )
    _, hparams = model_hyperparameters(cfg)
    for key, value in architecture.items():
        if key != "name" and key not in ENERGY_TERMS and hparams.get(key) != value:
            raise InputError(
                f"model.{key}={hparams.get(key)!r} but the backbone in {source} has "
                f"{key}={value!r}; a pretrained backbone keeps its architecture (drop the override)"
            )


def validate(cfg: DictConfig) -> None:
    """Checks beyond types: ranges, choices, trainer keys, backbone keys."""
    import lightning

    model_hyperparameters(cfg)
    accepted = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", "callbacks", "logger"}
    for key in cfg.trainer:
        if key not in accepted:
            raise InputError(f"config: trainer.{key}: not an argument of lightning.Trainer")
    monitors = CHECKPOINT_MONITORS if labelled(cfg) else UNLABELLED_MONITORS  # denoising: no errors
    checks = [
        *data_checks(cfg.data),
        *task_checks(cfg.task),
        *finetune_checks(cfg.finetune),
        (
            "checkpoint.every_n_steps",
            cfg.checkpoint.every_n_steps is None or cfg.checkpoint.every_n_steps >= 1,
            "null or an integer >= 1",
        ),
        ("checkpoint.monitor", cfg.checkpoint.monitor in monitors, one_of(monitors)),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise InputError(
                f"config: {key}: {OmegaConf.select(cfg, key)!r} is out of range; expected {expected}"
            )
    check_embedded_smiles(cfg.data)
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
    if cfg.data.source == "qm9" and labelled(cfg) and qm9_unlabelled and uses_default_data(cfg.data):
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
    embedded = cfg.data.source == "embedded" and uses_default_data(cfg.data)
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
