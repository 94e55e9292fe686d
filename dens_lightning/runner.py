"""Run one stage from a validated config → a run directory (:class:`.run_directory.RunDirectory`).
The CLI, the experiments and the notebooks call this, never the CLI; a run is resumed the same way
from each (:func:`training_config` reads a resumed run's own config).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning
import torch
from omegaconf import DictConfig, OmegaConf

from .allocator import keep_freed_memory
from .artifacts import load_checkpoint
from .config import check_architecture, labelled, load_config, load_yaml, model_hyperparameters, to_yaml
from .data.datamodule import AtomsDataModule
from .errors import InputError, Interrupted
from .models.repulsion import reach_from_data
from .replay import attach_replay
from .run_directory import RunDirectory
from .run_outputs import save_finetuned, save_pretrained
from .tasks.config import legacy_overrides
from .tasks.finetune import EnergyForceTask
from .training.checkpoints import CheckpointOnInterrupt
from .training.trainer import make_trainer, precision_dtype, quiet_lightning
from .warm_start import Pretrained, finetune_config, pretrained_backbone, read_warm_start, warm_start

log = logging.getLogger("dens_lightning")


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    test_metrics: dict | None
    pretrained_tensors: int | None = None  # backbone tensors loaded with finetune --from
    pretrained_encoder: bool = False  # whether a DeNS-pretrained force encoder was loaded too
    pretrained_energy_head: bool = False  # whether the pretrained energy head was kept
    is_global_zero: bool = True  # False on the other ranks of a multi-process run (they print nothing)


def training_config(
    stage: str,
    config_files: str | list[str] | None = None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    from_path: str | Path | Pretrained | None = None,
) -> DictConfig:
    """The validated config of a run: a resumed run's own ``config.yaml`` (``overrides`` still
    apply); a ``finetune --from`` run's, with the pretrained backbone's architecture (``from_path``:
    its path, or the backbone as read once by :func:`.warm_start.pretrained_backbone`); otherwise
    the packaged default, ``config_files`` and ``overrides``."""
    if resume:
        if run_dir is None:
            raise InputError("--resume needs --run-dir: the run to continue")
        if config_files:
            raise InputError("--resume uses the run's own config.yaml; drop --config (overrides are allowed)")
        saved = RunDirectory(run_dir).saved_config()
        legacy = legacy_overrides(load_yaml(saved))  # keys the run's version did not have
        return load_config(stage, str(saved), [*legacy, *(overrides or [])])
    if stage == "finetune" and from_path is not None:
        return finetune_config(from_path, config_files, overrides)
    return load_config(stage, config_files, overrides)


@dataclass
class _Opened:
    """What both stages open a run with."""

    run_dir: RunDirectory
    resume_from: Path | None
    name: str
    hparams: dict
    trainer: lightning.Trainer


def _open(
    cfg: DictConfig | None, stage: str, run_dir, resume: bool, progress: bool, callbacks
) -> tuple[DictConfig, _Opened]:
    """The shared opening of both stages: the run directory (checked against ``resume``), the
    config (a resumed run's own when ``cfg`` is None), the seed, the backbone and the Trainer."""
    run_dir = RunDirectory(run_dir) if run_dir is not None else RunDirectory.timestamped(stage)
    if cfg is None:
        cfg = training_config(stage, run_dir=run_dir.path, resume=resume)
    resume_from = run_dir.start(resume)
    keep_freed_memory()
    lightning.seed_everything(cfg.seed, workers=True, verbose=False)
    name, hparams = model_hyperparameters(cfg)
    trainer = make_trainer(cfg, run_dir, progress, callbacks, resume_from)
    return cfg, _Opened(run_dir, resume_from, name, hparams, trainer)


def _fit(task, datamodule, cfg: DictConfig, run: _Opened) -> None:
    """Train ``task``, then load its best weights (EMA-averaged where enabled) on every rank."""
    trainer, run_dir = run.trainer, run.run_dir
    if trainer.is_global_zero:
        run_dir.write_config(to_yaml(cfg))
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
            trainer.fit(task, datamodule=datamodule, ckpt_path=run.resume_from, weights_only=True)
    except (SIGTERMException, SystemExit) as err:  # Lightning exits after Ctrl-C (KeyboardInterrupt)
        if saved.saved_to is None:
            raise
        raise interrupted(
            *(("SIGTERM", 143) if isinstance(err, SIGTERMException) else ("Ctrl-C", 130))
        ) from err
    if run_dir.best_checkpoint.exists():
        task.load_state_dict(task.current_state(load_checkpoint(run_dir.best_checkpoint)["state_dict"]))


def encodes_forces(cfg: DictConfig) -> bool:
    """Whether the run encodes labelled forces into the backbone's input (DeNS)."""
    return bool(cfg.task.dens.enabled and cfg.task.dens.force_encoding)


def pretraining_label_hints(fits_energies: bool) -> dict[str, str]:
    """What a pretraining run on data without labels can do instead."""
    hints = {"energy": "pretrain with task.objective=denoise (label-free)"}
    if not fits_energies:  # forces are needed only to encode them
        hints["forces"] = "set task.dens.force_encoding=false"
    return hints


def _datamodule(cfg: DictConfig, run: _Opened, stage: str) -> AtomsDataModule:
    """Read, split and fit statistics now, on every rank (before the processes meet in ``fit``)."""
    pretraining = stage == "pretrain"
    require_energy = cfg.task.energy_weight > 0 and labelled(cfg)
    require_forces = (cfg.task.forces_weight > 0 and labelled(cfg)) or encodes_forces(cfg)
    datamodule = AtomsDataModule(
        cfg.data,
        cutoff=run.hparams["cutoff"],
        seed=cfg.seed,
        run_dir=run.run_dir.path,
        require_energy=require_energy,
        require_forces=require_forces,
        dtype=precision_dtype(cfg.trainer.get("precision", "32-true")),
        lazy_default=pretraining,  # the pretraining sets are read structure by structure
        fit_statistics=not pretraining or require_energy or require_forces,
        label_hints=pretraining_label_hints(require_energy) if pretraining else None,
        is_global_zero=run.trainer.is_global_zero,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    _check_elements(datamodule, run.hparams)
    return datamodule


def run_pretrain(
    cfg: DictConfig | None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list | None = None,
) -> RunResult:
    """Pretraining with ``task.objective``: ``denoise`` (label-free; the run directory's
    ``model.safetensors`` holds the backbone and its noise head), ``supervised`` (energies and forces)
    or ``dens`` (the same with DeNS beside them; the file also holds the force encoder); either of
    the last two files holds a whole potential, energy head included. Stage ``pretrain``, ready for
    ``finetune --from``. ``cfg`` None with ``resume``: the run's own config. ``callbacks``: Lightning
    callbacks added to the run's own (e.g. a timer)."""
    cfg, run = _open(cfg, "pretrain", run_dir, resume, progress, callbacks)
    datamodule = _datamodule(cfg, run, "pretrain")
    task_cfg = OmegaConf.to_object(cfg.task)  # a typed TaskConfig
    if cfg.task.objective == "denoise":
        from .tasks.pretrain import DenoisingPretraining

        task = DenoisingPretraining(
            run.name, run.hparams, task_cfg, neighbor_backend=cfg.data.neighbor_backend
        )
        task.set_force_scale(datamodule.scale)
    else:
        _zbl_reach_from_data(run.hparams, datamodule)
        task = EnergyForceTask(run.name, run.hparams, task_cfg, neighbor_backend=cfg.data.neighbor_backend)
        task.set_statistics(datamodule.references, datamodule.scale)
    _fit(task, datamodule, cfg, run)
    if run.trainer.is_global_zero:
        save_pretrained(cfg, task, datamodule, run.trainer, run.run_dir)
    return RunResult(run.run_dir.path, run.run_dir.model, None, is_global_zero=run.trainer.is_global_zero)


def run_finetune(
    cfg: DictConfig | None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    from_path: str | Path | Pretrained | None = None,
    progress: bool = True,
    callbacks: list | None = None,
) -> RunResult:
    """Train energies and forces, from scratch or from the backbone at ``from_path`` (a pretrain run
    directory, a model file or a ``.ckpt``, or the backbone as read by
    :func:`.warm_start.pretrained_backbone`; a config whose architecture differs is refused before
    the run directory is made): every backbone tensor is loaded; a model trained on
    energies keeps its energy head, with the per-element references refitted on its residuals on
    the new data (``finetune.energy_head``), any other head starts fresh with references fitted on
    the new data; the warm-started model's validation errors before the first step are recorded
    (:mod:`.warm_start`). ``cfg`` None with ``resume``: the run's own config. ``callbacks``:
    Lightning callbacks added to the run's own."""
    pretrained = None
    if from_path is not None and not resume:
        pretrained = from_path if isinstance(from_path, Pretrained) else pretrained_backbone(from_path)
        if cfg is not None:
            check_architecture(cfg, pretrained.architecture, pretrained.name_given)
    cfg, run = _open(cfg, "finetune", run_dir, resume, progress, callbacks)
    datamodule = _datamodule(cfg, run, "finetune")
    _zbl_reach_from_data(run.hparams, datamodule)
    trainer, run_dir = run.trainer, run.run_dir

    task = EnergyForceTask(
        model_name=run.name,
        model_hparams=run.hparams,
        task=OmegaConf.to_object(cfg.task),
        finetune=OmegaConf.to_object(cfg.finetune),
        neighbor_backend=cfg.data.neighbor_backend,
    )
    task.set_statistics(datamodule.references, datamodule.scale)
    loaded_now = warm_start(task, datamodule, pretrained, run_dir, trainer) if pretrained is not None else {}
    origin = loaded_now or (read_warm_start(run_dir) if resume else None)
    attach_replay(task, cfg, resumed=run.resume_from is not None)

    _fit(task, datamodule, cfg, run)
    test_metrics = None
    if "test" in datamodule.splits:  # on every device, each structure once; the same on every rank
        with quiet_lightning():
            trainer.test(task, datamodule=datamodule, verbose=False, weights_only=True)
        test_metrics = {"n_structures": len(datamodule.splits["test"]), **task.test_results}
    if trainer.is_global_zero:
        save_finetuned(cfg, task, datamodule, run_dir, origin, test_metrics)
    return RunResult(
        run_dir=run_dir.path,
        model_path=run_dir.model,
        test_metrics=test_metrics,
        pretrained_tensors=loaded_now.get("tensors_loaded"),
        pretrained_encoder=bool(loaded_now.get("force_encoder_loaded")),
        pretrained_energy_head=bool(loaded_now.get("energy_head_loaded")),
        is_global_zero=trainer.is_global_zero,
    )


def _zbl_reach_from_data(hparams: dict, datamodule: AtomsDataModule) -> None:
    """With ``model.zbl`` and ``model.zbl_data_switch``, set ``model.zbl_reach`` of every element pair
    in the training data to that fraction of the pair's shortest distance there (pairs given in
    ``zbl_reach`` and absent from the data keep their value), before the model is built, so that the
    model file holds the result. Every rank derives the same from the same split."""
    fraction = hparams.get("zbl_data_switch")
    if not hparams.get("zbl") or fraction is None:
        return
    reach = reach_from_data(datamodule.shortest_pair_distances(), fraction, hparams["cutoff"])
    hparams["zbl_reach"] = {**hparams.get("zbl_reach", {}), **reach}
    listed = ", ".join(f"{pair} {distance:.3f}" for pair, distance in reach.items())
    log.info("ZBL switch per element pair (Å, %s of its shortest training distance): %s", fraction, listed)


def _check_elements(datamodule: AtomsDataModule, hparams: dict) -> None:
    for name, structures in datamodule.splits.items():
        if structures.z.max() > hparams["max_z"]:
            raise InputError(
                f"{structures.source}: atomic number {int(structures.z.max())} in the {name} split exceeds "
                f"model.max_z={hparams['max_z']}"
            )
