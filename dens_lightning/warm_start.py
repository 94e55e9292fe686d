"""Starting a finetune from a pretrained model (``finetune --from``): read the backbone of a run
directory, a model file or a checkpoint once, give the config its architecture, copy its
tensors (and a DeNS-pretrained force encoder, and the energy head of a model trained on energies)
into the new task, start a new energy head (at the reference energies with ``finetune.head_init=zero``),
and measure the warm-started model on the validation split before the first step.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from .artifacts import load_checkpoint, load_parts, read_metadata, resolve_model_path, with_prefix
from .config import load_config
from .data.statistics import reference_energies
from .errors import InputError
from .evaluation import evaluate_structures, predict_energies
from .files import write_json_atomic
from .models.training_model import current_layout
from .run_directory import RunDirectory
from .zoo import is_zoo

log = logging.getLogger("dens_lightning")


@dataclass
class Pretrained:
    """A backbone to start finetuning from: its architecture, its tensors and where they came from."""

    name: str
    hyperparameters: dict
    state: dict[str, torch.Tensor]
    metadata: dict
    source: Path
    encoder_state: dict[str, torch.Tensor] = field(default_factory=dict)  # DeNS force encoder, if any
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)  # energy head, if trained on energies
    zoo: str | None = None  # ``zoo:NAME`` when the source is a shipped model

    @property
    def name_given(self) -> str:
        """How the source is named: ``zoo:NAME`` for a shipped model, else its path."""
        return self.zoo or str(self.source)

    @property
    def architecture(self) -> dict:
        return {"name": self.name, **self.hyperparameters}


def pretrained_backbone(path: str | Path) -> Pretrained:
    """The backbone of a run directory, a model file (pretrained or finetuned) or a ``.ckpt``."""
    path = Path(path)
    if path.suffix == ".ckpt":
        checkpoint = load_checkpoint(path)
        hparams = checkpoint.get("hyper_parameters", {})
        if "model_name" not in hparams:
            raise InputError(
                f"{path}: checkpoint lacks model_name/model_hparams; not a dens_lightning checkpoint"
            )
        tensors = current_layout(checkpoint["state_dict"], {})
        state = with_prefix(tensors, "model.potential.backbone.")
        if not state:
            raise InputError(f"{path}: checkpoint holds no backbone tensors")
        objective = (hparams.get("task") or {}).get("objective")  # None: a finetune's checkpoint
        metadata = {"stage": "finetune" if objective is None else "pretrain", "objective": objective}
        encoder = with_prefix(tensors, "model.force_encoder.")
        # denoising trains no energy head (the model has one, untrained)
        head = with_prefix(tensors, "model.potential.energy_head.") if objective != "denoise" else {}
        name, architecture = hparams["model_name"], hparams["model_hparams"]
        return Pretrained(name, architecture, state, metadata, path, encoder, head)
    model_path = resolve_model_path(path)
    metadata, parts = load_parts(model_path)
    backbone = metadata["backbone"]
    return Pretrained(
        backbone["name"],
        backbone["hyperparameters"],
        parts["backbone"],
        metadata,
        model_path,
        parts["force_encoder"],
        parts["energy_head"],
        zoo=str(path) if is_zoo(path) else None,
    )


def finetune_config(
    source: Pretrained | str | Path | None,
    config_file: str | list[str] | None = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """The finetune config for ``finetune --from source``: the pretrained backbone's architecture
    replaces the packaged default's ``model`` section, then ``config_file`` and ``overrides`` apply
    (an override of the architecture is refused)."""
    if source is None:
        return load_config("finetune", config_file, overrides)
    if isinstance(source, Pretrained):
        architecture, where = source.architecture, source.name_given
    else:
        architecture, where = pretrained_architecture(source), source
    return load_config("finetune", config_file, overrides, base_model=architecture, base_source=str(where))


def pretrained_architecture(path: str | Path) -> dict:
    """Backbone name and hyperparameters of ``path``, from a model file's metadata alone (its tensors
    are read once, by :func:`pretrained_backbone`, when the run starts)."""
    if Path(path).suffix == ".ckpt":
        return pretrained_backbone(path).architecture
    backbone = read_metadata(resolve_model_path(path))["backbone"]
    return {"name": backbone["name"], **backbone["hyperparameters"]}


def load_pretrained(backbone: torch.nn.Module, pretrained: Pretrained) -> int:
    """Copy every pretrained tensor into ``backbone`` (all must match); returns how many."""
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(pretrained.state))
    unexpected = sorted(set(pretrained.state) - set(expected))
    shapes = [k for k in expected if k in pretrained.state and pretrained.state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise InputError(
            f"{pretrained.name_given}: backbone tensors do not match {pretrained.name!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shape {shapes[:3]})"
        )
    backbone.load_state_dict(pretrained.state)
    log.info("loaded all %d backbone tensors from %s", len(pretrained.state), pretrained.name_given)
    return len(pretrained.state)


def load_pretrained_encoder(task, pretrained: Pretrained, force_scale: float) -> bool:
    """Start a DeNS finetune's force encoder from a DeNS-pretrained one, where both exist and match;
    the force scale stays the new data's. Returns whether it was loaded."""
    encoder = task.force_encoder
    if encoder is None or not pretrained.encoder_state:
        return False
    expected = encoder.state_dict()
    if set(expected) != set(pretrained.encoder_state) or any(
        expected[k].shape != v.shape for k, v in pretrained.encoder_state.items()
    ):
        log.info("the pretrained force encoder does not match this one; it starts fresh")
        return False
    encoder.load_state_dict(pretrained.encoder_state)
    encoder.set_force_scale(force_scale)
    log.info("loaded the pretrained DeNS force encoder (%d tensors)", len(pretrained.encoder_state))
    return True


def load_energy_head(potential: torch.nn.Module, pretrained: Pretrained, datamodule, device="cpu") -> dict:
    """Keep the energy head of a model trained on energies (its network and learned per-element
    scale) and refit the per-element reference energies to the new data on the model's residuals:
    ``e_z`` minimising ``Σ (E - E_model,0 - Σ_i e_{z_i})²`` over the training split (a seeded
    sample of a large one), ``E_model,0`` the model's energy with zero references. Reference
    energies fitted on the labels alone would count the interaction energy the head already
    predicts twice. Returns the fitted references (eV per atom, by atomic number)."""
    head = potential.energy_head
    expected = head.state_dict()
    if set(expected) != set(pretrained.head_state) or any(
        expected[k].shape != v.shape for k, v in pretrained.head_state.items()
    ):
        raise InputError(f"{pretrained.name_given}: energy head tensors do not match {pretrained.name!r}")
    head.load_state_dict(pretrained.head_state)
    structures = datamodule.statistics_set()
    references = dict(datamodule.references)  # without energies to fit to, the new data's stand
    if structures.energy is not None:
        head.set_references({})
        with torch.random.fork_rng(devices=[]):
            predicted = predict_energies(potential.to(device), structures, datamodule.eval_batch_size, device)
        references = reference_energies(structures, structures.energy - predicted)
    head.set_references(references)
    log.info("kept the energy head of %s; references refitted on its residuals", pretrained.name_given)
    return references


def warn_new_elements(datamodule, pretrained: Pretrained) -> None:
    """Warn of elements of the training split that the pretraining data did not hold."""
    seen = pretrained.metadata.get("elements")
    if not seen:
        return
    new = sorted(set(datamodule.splits["train"].elements) - set(seen))
    if new:
        from ase.data import chemical_symbols

        warnings.warn(
            f"elements {', '.join(chemical_symbols[z] for z in new)} were not in the pretraining data of "
            f"{pretrained.name_given}; their embeddings start from the untrained initialisation",
            UserWarning,
            stacklevel=2,
        )


def step0_validation(potential: torch.nn.Module, datamodule, device: torch.device | str = "cpu") -> dict:
    """Errors of the warm-started ``potential`` on the validation split before the first finetuning
    step (its energy references already fitted to the new data): what the pretrained start is worth
    on its own, in the units of :func:`~dens_lightning.evaluation.evaluate_structures`."""
    structures, batch_size = datamodule.splits["val"], datamodule.eval_batch_size
    with torch.random.fork_rng(devices=[]):  # a loader's seed draw would shift the run's data order
        errors, _ = evaluate_structures(potential.to(device), structures, batch_size, device)
    log.info("warm-started model before finetuning: %s", errors)
    return errors


def warm_start(task, datamodule, pretrained: Pretrained, run_dir: str | Path, trainer) -> dict:
    """Load ``pretrained`` into the finetune ``task`` (whose energy references are already fitted)
    and return the record of where the run began: source, stage, pretraining data, what was loaded
    and the validation errors before the first step. Rank zero measures them and writes the record
    to the run directory, so that a resumed run's model card still names its start."""
    record = {
        "path": str(pretrained.source),
        **({"zoo": pretrained.zoo} if pretrained.zoo else {}),
        "stage": pretrained.metadata.get("stage"),
        "objective": pretrained.metadata.get("objective"),
        "data": pretrained.metadata.get("data"),
        "tensors_loaded": load_pretrained(task.potential.backbone, pretrained),
        "force_encoder_loaded": load_pretrained_encoder(task, pretrained, datamodule.scale),
        "energy_head_loaded": False,
    }
    if pretrained.head_state and task.finetune_cfg.energy_head == "keep":
        load_energy_head(task.potential, pretrained, datamodule, trainer.strategy.root_device)
        record["energy_head_loaded"] = True
    else:
        record["head_init"] = task.finetune_cfg.head_init
        if task.finetune_cfg.head_init == "zero":
            task.potential.energy_head.start_at_references()
    warn_new_elements(datamodule, pretrained)
    if trainer.is_global_zero:
        record["validation_before_finetuning"] = step0_validation(
            task.potential, datamodule, trainer.strategy.root_device
        )
        write_json_atomic(RunDirectory(run_dir).warm_start, record)
    return record


def read_warm_start(run_dir: str | Path) -> dict | None:
    """The record :func:`warm_start` wrote in ``run_dir``; None for a run trained from scratch."""
    path = RunDirectory(run_dir).warm_start
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
