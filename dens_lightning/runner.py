"""Run one stage from a validated config → a run directory. The CLI, the experiments and the
notebooks call this, never the CLI.

Run directory (DESIGN section 3): ``config.yaml`` (resolved), ``splits.json``, ``metrics.csv``,
``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt``, ``model.safetensors``, ``test_metrics.json``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning
import torch
from omegaconf import DictConfig, OmegaConf

from .allocator import keep_freed_memory
from .artifacts import (
    MODEL_FILE,
    load_checkpoint,
    load_potential,
    model_metadata,
    resolve_model_path,
    save_model,
)
from .config import dens_auxiliary, labelled, model_hyperparameters, to_yaml
from .data.datamodule import AtomsDataModule
from .errors import InputError, Interrupted, first_line
from .evaluation import evaluate_structures, write_structure_errors
from .files import json_text, write_text_atomic
from .tasks.checkpoints import (
    AtomicCheckpointIO,
    CheckpointOnInterrupt,
    epoch_checkpoint,
    periodic_checkpoint,
)
from .tasks.finetune import EnergyForceTask
from .warm_start import check_architecture, pretrained_backbone, read_warm_start, warm_start

log = logging.getLogger("dens_lightning")


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    test_metrics: dict | None
    pretrained_tensors: int | None = None  # backbone tensors loaded with finetune --from
    pretrained_encoder: bool = False  # whether a DeNS-pretrained force encoder was loaded too
    is_global_zero: bool = True  # False on the other ranks of a multi-process run (they print nothing)


def default_run_dir(stage: str) -> Path:
    return Path("runs") / stage / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def precision_dtype(precision) -> torch.dtype:
    return torch.float64 if str(precision).startswith("64") else torch.float32


def _loggers(run_dir: Path, resume_from: Path | None = None) -> list:
    from .tasks.logging import RunCSVLogger

    resume_step = load_checkpoint(resume_from)["global_step"] if resume_from is not None else None
    loggers = [RunCSVLogger(run_dir, resume_step)]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    return loggers


def _callbacks(cfg: DictConfig, run_dir: Path, progress: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from .tasks.consistency import SameDataOnEveryRank
    from .tasks.ema import EMA

    callbacks = [
        SameDataOnEveryRank(),
        CheckpointOnInterrupt(run_dir / "checkpoints"),
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        epoch_checkpoint(run_dir / "checkpoints"),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if cfg.checkpoint.every_n_steps:
        callbacks.append(periodic_checkpoint(run_dir / "checkpoints", cfg.checkpoint.every_n_steps))
    if cfg.task.ema_decay:
        callbacks.append(EMA(cfg.task.ema_decay))
    if progress:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    return callbacks


@contextlib.contextmanager
def quiet_lightning():
    """Silence Lightning's advice that does not apply here (worker counts, litlogger tips, ...)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in (
            ".*does not have many workers.*",
            ".*WeightAveraging.*",
            ".*transfer_batch_to_device.*",
            ".*LeafSpec.*",
            ".*exists and is not empty.*",
            ".*The number of training batches.*",
            ".*sync_dist=True.*",  # epoch values are logged already reduced over every device
            ".*Grad strides do not match bucket view strides.*",  # DDP: "not an error"
            ".*your dataloader is not resumable.*",  # it is: the sampler resumes (data.datamodule)
        ):
            warnings.filterwarnings("ignore", message=message)
        yield


def make_trainer(
    cfg: DictConfig,
    run_dir: Path,
    progress: bool = True,
    callbacks: list | None = None,
    resume_from: Path | None = None,
) -> lightning.Trainer:
    """The run's Trainer: ``cfg.trainer`` arguments, the run's loggers and callbacks, then ``callbacks``;
    ``resume_from``: the checkpoint a resumed run continues from."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.setdefault("max_epochs", 100)
    kwargs.setdefault("log_every_n_steps", 10)
    kwargs.setdefault("gradient_clip_val", 10.0)
    kwargs.setdefault("enable_progress_bar", progress)
    kwargs.setdefault("enable_model_summary", progress)  # quiet logs; trainer.enable_model_summary=true
    kwargs["inference_mode"] = False  # validation needs autograd for forces
    kwargs["plugins"] = [AtomicCheckpointIO(), *_as_list(kwargs.get("plugins"))]
    kwargs["default_root_dir"] = str(run_dir)
    try:
        with quiet_lightning():
            trainer = lightning.Trainer(
                logger=_loggers(run_dir, resume_from),
                callbacks=_callbacks(cfg, run_dir, progress) + list(callbacks or []),
                **kwargs,
            )
    except (ValueError, TypeError, lightning.fabric.utilities.exceptions.MisconfigurationException) as err:
        raise InputError(f"config: trainer: {first_line(err)}") from err
    check_strategy(trainer.strategy)
    return trainer


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _start(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, after checking that the run directory fits the request."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.exists():
        raise InputError(f"{run_dir}: nothing to resume (no checkpoints/last.ckpt)")
    if not resume and last.exists():
        raise InputError(
            f"{run_dir}: already holds a run; pass --resume to continue it or choose another --run-dir"
        )
    return last if resume else None


def _fit(trainer: lightning.Trainer, task, datamodule, cfg: DictConfig, run_dir: Path, resume_from):
    """Train ``task``, then load its best weights (EMA-averaged where enabled) on every rank."""
    if trainer.is_global_zero:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    if precision_dtype(cfg.trainer.get("precision", "32-true")) == torch.float64:
        # before fit: Lightning loads a resumed run's weights before it converts the model to float64,
        # which would round them to float32 on the way
        task.double()
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    saved = next(c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt))

    def interrupted(cause: str, status: int) -> Interrupted:
        return Interrupted(
            f"{run_dir}: stopped by {cause} after step {saved.step}, checkpoint {saved.saved_to} written; "
            f"continue with --resume --run-dir {run_dir}",
            status,
        )

    try:
        with quiet_lightning():
            trainer.fit(task, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except (SIGTERMException, SystemExit) as err:  # Lightning exits after Ctrl-C (KeyboardInterrupt)
        if saved.saved_to is None:
            raise
        raise interrupted(
            *(("SIGTERM", 143) if isinstance(err, SIGTERMException) else ("Ctrl-C", 130))
        ) from err
    best = run_dir / "checkpoints" / "best.ckpt"
    if best.exists():
        task.load_state_dict(load_checkpoint(best)["state_dict"])


def check_strategy(strategy) -> None:
    """Refuse FSDP. Force training differentiates the model twice (forces ``-dE/dr``, then the
    loss; so does SchNet's gradient noise head), and FSDP reshards the parameters when the first
    backward ends, so the second one meets freed storage (FSDP supports one backward per step,
    pytorch/pytorch#106637). Denoising with a vector head would run, but these backbones (< 2M
    parameters) fit on every device, where sharding them only adds communication, and the end-of-run
    export would have to gather sharded parameters: DDP does all of this."""
    from lightning.pytorch.strategies import FSDPStrategy

    if isinstance(strategy, FSDPStrategy):
        raise InputError(
            "trainer.strategy=fsdp: not supported; force training differentiates the model twice, which "
            "FSDP cannot, and these backbones fit on one device: use trainer.strategy=ddp"
        )


def encodes_forces(cfg: DictConfig) -> bool:
    """Whether the run encodes labelled forces into the backbone's input (DeNS)."""
    return bool(cfg.task.dens.enabled and cfg.task.dens.force_encoding)


def _datamodule(
    cfg: DictConfig, run_dir: Path, hparams: dict, stage: str, trainer: lightning.Trainer
) -> AtomsDataModule:
    """Read, split and fit statistics now, on every rank (before the processes meet in ``fit``)."""
    datamodule = AtomsDataModule(
        cfg.data,
        cutoff=hparams["cutoff"],
        seed=cfg.seed,
        run_dir=run_dir,
        require_energy=cfg.task.energy_weight > 0 and labelled(cfg),
        require_forces=(cfg.task.forces_weight > 0 and labelled(cfg)) or encodes_forces(cfg),
        dtype=precision_dtype(cfg.trainer.get("precision", "32-true")),
        stage=stage,
        is_global_zero=trainer.is_global_zero,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    _check_elements(datamodule, hparams)
    return datamodule


def write_model_card(run_dir: Path, metadata: dict) -> None:
    """``README.md`` of the run directory: what the model is, from its metadata."""
    from .card import model_card

    write_text_atomic(run_dir / "README.md", model_card(metadata, str(run_dir)))


def run_pretrain(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list | None = None,
) -> RunResult:
    """Pretraining with ``task.objective``: ``denoise`` (label-free; the run directory's
    ``model.safetensors`` holds the backbone and its noise head), ``supervised`` (energies and forces)
    or ``dens`` (the same with DeNS beside them; the file also holds the force encoder); either of
    the last two files holds a whole potential, energy head included. Stage ``pretrain``, ready for
    ``finetune --from``. ``callbacks``: Lightning callbacks added to the run's own (e.g. a timer)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir("pretrain")
    resume_from = _start(run_dir, resume)
    keep_freed_memory()
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    name, hparams = model_hyperparameters(cfg)
    trainer = make_trainer(cfg, run_dir, progress, callbacks, resume_from)
    datamodule = _datamodule(cfg, run_dir, hparams, "pretrain", trainer)
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    if cfg.task.objective == "denoise":
        from .tasks.pretrain import DenoisingPretraining

        task = DenoisingPretraining(name, hparams, task_cfg, neighbor_backend=cfg.data.neighbor_backend)
        task.set_force_scale(datamodule.scale)
    else:
        task = EnergyForceTask(name, hparams, task_cfg, neighbor_backend=cfg.data.neighbor_backend)
        task.set_statistics(datamodule.references, datamodule.scale)
    _fit(trainer, task, datamodule, cfg, run_dir, resume_from)
    model_path = run_dir / MODEL_FILE
    if trainer.is_global_zero:
        write_model_card(run_dir, save_pretrained(cfg, task, datamodule, trainer, model_path))
    return RunResult(run_dir, model_path, test_metrics=None, is_global_zero=trainer.is_global_zero)


def training_provenance(cfg: DictConfig, datamodule: AtomsDataModule) -> dict:
    """What a model file records of its training data, and of DeNS where it ran beside energies and
    forces (how the model was trained travels with it)."""
    provenance = dict(datamodule.provenance)
    if dens_auxiliary(cfg):
        provenance["dens"] = OmegaConf.to_container(cfg.task.dens, resolve=True)
    return provenance


def save_pretrained(cfg: DictConfig, task, datamodule: AtomsDataModule, trainer, path: Path) -> dict:
    """Write a pretraining run's model file and return its metadata: the objective, the pretraining
    data and the best validation loss (and a labelled objective's validation errors)."""
    from .artifacts import pretrain_metadata

    best = trainer.checkpoint_callback.best_model_score
    provenance = training_provenance(cfg, datamodule)
    elements = datamodule.splits["train"].elements
    if cfg.task.objective == "denoise":
        metadata = pretrain_metadata(
            task.backbone,
            provenance=provenance,
            elements=elements,
            noise=OmegaConf.to_container(cfg.task.noise, resolve=True)
            | {"force_encoding": task.force_encoder is not None},
            validation={"noise_loss": float(best) if best is not None else None},
        )
        save_model(task.cpu(), path, metadata)
        return metadata
    potential = task.potential.cpu().eval()
    errors, _ = evaluate_structures(potential, datamodule.splits["val"], datamodule.eval_batch_size)
    metadata = model_metadata(
        potential,
        stage="pretrain",
        provenance=provenance,
        elements=elements,
        objective=cfg.task.objective,
        validation={"loss": float(best) if best is not None else None, **errors},
    )
    encoder = task.force_encoder
    save_model(potential, path, metadata, parts={"force_encoder": encoder.cpu()} if encoder else None)
    return metadata


def run_finetune(
    cfg: DictConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    from_path: str | Path | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> RunResult:
    """Train energies and forces, from scratch or from the backbone at ``from_path`` (a pretrain run
    directory, a model file or a ``.ckpt``): every backbone tensor is loaded; a model trained on
    energies keeps its energy head, with the per-element references refitted on its residuals on
    the new data (``finetune.energy_head``), any other head starts fresh with references fitted on
    the new data; the warm-started model's validation errors before the first step are recorded
    (:mod:`.warm_start`). ``callbacks``: Lightning callbacks added to the run's own."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir("finetune")
    resume_from = _start(run_dir, resume)
    keep_freed_memory()
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)

    pretrained = pretrained_backbone(from_path) if from_path is not None and not resume else None
    if pretrained is not None:
        check_architecture(cfg, pretrained)
    name, hparams = model_hyperparameters(cfg)
    trainer = make_trainer(cfg, run_dir, progress, callbacks, resume_from)
    datamodule = _datamodule(cfg, run_dir, hparams, "finetune", trainer)

    task = EnergyForceTask(
        model_name=name,
        model_hparams=hparams,
        task=OmegaConf.to_container(cfg.task, resolve=True),
        finetune=OmegaConf.to_container(cfg.finetune, resolve=True),
        neighbor_backend=cfg.data.neighbor_backend,
    )
    task.set_statistics(datamodule.references, datamodule.scale)
    loaded_now = warm_start(task, datamodule, pretrained, run_dir, trainer) if pretrained is not None else {}
    origin = loaded_now or (read_warm_start(run_dir) if resume else None)

    _fit(trainer, task, datamodule, cfg, run_dir, resume_from)
    test_metrics = None
    if "test" in datamodule.splits:  # on every device, each structure once; the same on every rank
        with quiet_lightning():
            trainer.test(task, datamodule=datamodule, verbose=False, weights_only=True)
        test_metrics = {"n_structures": len(datamodule.splits["test"]), **task.test_results}
    potential = task.potential.cpu().eval()
    model_path = run_dir / MODEL_FILE
    if trainer.is_global_zero:
        provenance = training_provenance(cfg, datamodule)
        if origin is not None:
            provenance["pretrained_from"] = origin
        metadata = model_metadata(
            potential,
            stage="finetune",
            provenance=provenance,
            elements=sorted(datamodule.references),
            test_metrics=test_metrics,
        )
        save_model(potential, model_path, metadata)
        write_model_card(run_dir, metadata)
        if test_metrics is not None:
            write_text_atomic(run_dir / "test_metrics.json", json_text(test_metrics, indent=2) + "\n")
    return RunResult(
        run_dir=run_dir,
        model_path=model_path,
        test_metrics=test_metrics,
        pretrained_tensors=loaded_now.get("tensors_loaded"),
        pretrained_encoder=bool(loaded_now.get("force_encoder_loaded")),
        is_global_zero=trainer.is_global_zero,
    )


def _check_elements(datamodule: AtomsDataModule, hparams: dict) -> None:
    for name, structures in datamodule.splits.items():
        if structures.z.max() > hparams["max_z"]:
            raise InputError(
                f"{structures.source}: atomic number {int(structures.z.max())} in the {name} split exceeds "
                f"model.max_z={hparams['max_z']}"
            )


def test_model(
    model_path: str | Path,
    data_path: str | Path,
    batch_size: int = 64,
    read_options=None,
    per_structure: str | Path | None = None,
) -> dict:
    """The ``test`` command: errors of a model file on a data file; with ``per_structure``, each
    structure's errors are also written to that CSV file."""
    from .data.readers import read_structures

    keep_freed_memory()
    potential = load_potential(resolve_model_path(model_path))
    structures = read_structures(data_path, read_options)
    if structures.energy is None and structures.forces is None:
        raise InputError(f"{data_path}: no energies or forces to test against")
    errors, each = evaluate_structures(potential, structures, batch_size)
    if per_structure:
        write_structure_errors(per_structure, each)
    return errors
