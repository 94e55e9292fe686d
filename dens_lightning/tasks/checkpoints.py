"""Checkpoints that survive interruption (run directory: ``checkpoints/last.ckpt`` and ``best.ckpt``).

- Every checkpoint is written atomically: a temporary file beside the target, flushed to disk, then
  renamed over it. A run killed while writing leaves the previous checkpoint whole.
- ``checkpoint.every_n_steps``: ``last.ckpt`` every N optimizer steps too, not only after validation.
- SIGTERM (what SLURM sends before a job's time runs out) and Ctrl-C: Lightning lets the running
  batch finish, then ``last.ckpt`` is written before the process exits (:class:`CheckpointOnInterrupt`).
- ``--resume`` restores the step counter, optimizer, scheduler and EMA from the checkpoint
  (Lightning), and a run resumed mid-epoch continues that epoch's data order where it stopped
  (``data.datamodule.ResumableSampler``; Lightning alone would start the epoch's order again).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ..files import replacing

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's directory, ``fsync``, then ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with replacing(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())


def periodic_checkpoint(directory: Path, every_n_steps: int) -> ModelCheckpoint:
    """Writes ``directory/last.ckpt`` every ``every_n_steps`` optimizer steps (and nothing else)."""
    return ModelCheckpoint(
        dirpath=directory,
        filename="step",
        every_n_train_steps=every_n_steps,
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,  # always last.ckpt, also after a checkpoint written on SIGTERM
    )


class CheckpointOnInterrupt(Callback):
    """On SIGTERM or Ctrl-C, write ``last.ckpt`` of the state after the last finished batch; with every
    checkpoint, flush the loggers.

    Lightning raises its ``SIGTERMException`` at the end of the batch that was running when the
    signal came, on every rank, and calls ``on_exception`` first: the state saved here is consistent.
    ``saved_to`` / ``step`` say what was written, for the runner's message."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.saved_to: Path | None = None
        self.step: int | None = None

    def on_save_checkpoint(self, trainer: lightning.Trainer, pl_module, checkpoint: dict) -> None:
        """Flush the loggers with every checkpoint: metrics.csv then holds every row up to it."""
        for logger in trainer.loggers:
            logger.save()

    def on_exception(self, trainer: lightning.Trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        path = self.directory / LAST
        trainer.save_checkpoint(path)
        self.saved_to, self.step = path, trainer.global_step
