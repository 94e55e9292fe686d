"""The Lightning ``Trainer`` of a run: ``trainer.*`` arguments, the run's loggers and callbacks
(checkpoints that survive interruption, EMA, the same-data check across ranks), quiet logs."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path

import lightning
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import InputError, first_line
from ..run_directory import BEST_CHECKPOINT, RunDirectory
from .checkpoints import AtomicCheckpointIO, CheckpointOnInterrupt, epoch_checkpoint, periodic_checkpoint


def precision_dtype(precision) -> torch.dtype:
    """The dtype of a ``trainer.precision`` setting: float64 for ``64*``, else float32."""
    return torch.float64 if str(precision).startswith("64") else torch.float32


def _loggers(run_dir: RunDirectory, resume_from: Path | None = None) -> list:
    from ..artifacts import load_checkpoint
    from .csv_logger import RunCSVLogger

    resume_step = load_checkpoint(resume_from)["global_step"] if resume_from is not None else None
    loggers = [RunCSVLogger(run_dir.path, resume_step)]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir.path, name="tensorboard", version=""))
    return loggers


def monitor_arguments(monitor: str) -> dict:
    """``ModelCheckpoint``'s monitor and mode for ``checkpoint.monitor``: the lowest validation value,
    or for ``last`` the latest validation (Lightning offers the global step to every checkpoint callback)."""
    if monitor == "last":
        return {"monitor": "step", "mode": "max"}
    return {"monitor": f"val/{monitor}", "mode": "min"}


def _callbacks(cfg: DictConfig, run_dir: RunDirectory, progress: bool) -> list:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from .consistency import SameDataOnEveryRank
    from .ema import EMA

    callbacks = [
        SameDataOnEveryRank(),
        CheckpointOnInterrupt(run_dir.checkpoints),
        ModelCheckpoint(
            dirpath=run_dir.checkpoints,
            filename=Path(BEST_CHECKPOINT).stem,
            **monitor_arguments(cfg.checkpoint.monitor),
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        ),
        epoch_checkpoint(run_dir.checkpoints),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if cfg.checkpoint.every_n_steps:
        callbacks.append(periodic_checkpoint(run_dir.checkpoints, cfg.checkpoint.every_n_steps))
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
            ".*your dataloader is not resumable.*",  # it is: the sampler resumes (data.loading)
        ):
            warnings.filterwarnings("ignore", message=message)
        yield


def make_trainer(
    cfg: DictConfig,
    run_dir: str | Path | RunDirectory,
    progress: bool = True,
    callbacks: list | None = None,
    resume_from: Path | None = None,
) -> lightning.Trainer:
    """The run's Trainer: ``cfg.trainer`` arguments, the run's loggers and callbacks, then ``callbacks``;
    ``resume_from``: the checkpoint a resumed run continues from."""
    run_dir = RunDirectory(run_dir)  # a RunDirectory is path-like too
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.setdefault("max_epochs", 100)
    kwargs.setdefault("log_every_n_steps", 10)
    kwargs.setdefault("gradient_clip_val", 10.0)
    kwargs.setdefault("enable_progress_bar", progress)
    kwargs.setdefault("enable_model_summary", progress)  # quiet logs; trainer.enable_model_summary=true
    kwargs["inference_mode"] = False  # validation needs autograd for forces
    kwargs["plugins"] = [AtomicCheckpointIO(), *_as_list(kwargs.get("plugins"))]
    kwargs["default_root_dir"] = str(run_dir.path)
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
