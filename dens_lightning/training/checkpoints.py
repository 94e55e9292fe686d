"""Checkpoints that survive interruption (run directory: ``checkpoints/last.ckpt`` and ``best.ckpt``).

- Every checkpoint is written atomically: a temporary file beside the target, flushed to disk, then
  renamed over it. A run killed while writing leaves the previous checkpoint whole.
- ``checkpoint.every_n_steps``: ``last.ckpt`` every N optimizer steps too, not only after validation.
- SIGTERM (what SLURM sends before a job's time runs out): the running training batch finishes, then
  ``last.ckpt`` is written and training stops, on every rank together; Ctrl-C also writes it
  (:class:`CheckpointOnInterrupt`).
- ``--resume`` restores the step counter, optimizer, scheduler and EMA from the checkpoint
  (Lightning), and a run resumed mid-epoch continues that epoch's data order where it stopped
  (``data.loading.ResumableSampler``; Lightning alone would start the epoch's order again).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from ..files import replacing
from ..run_directory import LAST_CHECKPOINT as LAST


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the target's directory, ``fsync``, then ``os.replace``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with replacing(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())


def epoch_checkpoint(directory: Path) -> ModelCheckpoint:
    """Writes ``directory/last.ckpt`` at the end of every epoch, whatever the validation loss did
    (``ModelCheckpoint(save_last=True)`` on a monitored checkpoint writes it only alongside a new best
    one, so an epoch without improvement would leave ``last.ckpt`` behind)."""
    return ModelCheckpoint(
        dirpath=directory,
        filename=Path(LAST).stem,
        monitor=None,
        save_top_k=1,  # without a monitor: the latest, under the one name
        enable_version_counter=False,
    )


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
    """SIGTERM: at the end of the next training batch, on every rank together, ``last.ckpt`` is
    written and Lightning's ``SIGTERMException`` raised; the runner then reports it. Ctrl-C:
    ``last.ckpt`` is written as Lightning's ``KeyboardInterrupt`` passes. With every checkpoint, the
    loggers are flushed.

    While training, this callback's SIGTERM handler replaces Lightning's, which would raise in the
    middle of validation, at a different batch on each rank of a DDP run (a rank then waits in a
    collective for one that has left). Here each rank only notes the signal; at the end of every
    training batch the ranks agree (one all-reduce of a flag), then all save together and stop. A
    signal during validation takes effect after it. ``saved_to`` / ``step``: what was written."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.saved_to: Path | None = None
        self.step: int | None = None
        self.signalled = False
        self._previous = None

    def _note(self, signum, frame) -> None:
        self.signalled = True

    def on_train_start(self, trainer: lightning.Trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._note)

    def teardown(self, trainer: lightning.Trainer, pl_module, stage: str) -> None:
        """Put the handler back if ours is still set (Lightning's own teardown, which usually comes
        first, restores the handlers from before the run)."""
        if self._previous is not None and signal.getsignal(signal.SIGTERM) == self._note:
            signal.signal(signal.SIGTERM, self._previous)
        self._previous = None

    def on_train_batch_end(self, trainer: lightning.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        signalled = self.signalled
        if trainer.world_size > 1:
            flag = torch.tensor([float(signalled)], device=pl_module.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signalled = bool(flag.item())
        if signalled:
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            path = self.directory / LAST
            trainer.save_checkpoint(path)  # every rank is here: its barrier is safe
            self.saved_to, self.step = path, trainer.global_step
            # stop now, every rank together (a graceful stop would validate and checkpoint the epoch
            # as finished, over this mid-epoch checkpoint)
            raise SIGTERMException

    def on_save_checkpoint(self, trainer: lightning.Trainer, pl_module, checkpoint: dict) -> None:
        """Flush the loggers with every checkpoint: metrics.csv then holds every row up to it."""
        for logger in trainer.loggers:
            logger.save()

    def on_exception(self, trainer: lightning.Trainer, pl_module, exception: BaseException) -> None:
        """Ctrl-C (or a SIGTERM outside training, which Lightning handles): write what there is. No
        barrier (the ranks may be anywhere): rank 0 writes, every rank reports the file."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if self.saved_to is not None:  # written already, at the end of a training batch
            return
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        path = self.directory / LAST
        trainer.strategy.save_checkpoint(trainer._checkpoint_connector.dump_checkpoint(), path)
        self.saved_to, self.step = path, trainer.global_step
