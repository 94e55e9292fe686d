"""Numerical faults in training: what a non-finite loss does (``task.nonfinite_loss``).

- ``stop`` (default): the run ends with :class:`~dens_lightning.errors.NumericalFault`, a message that
  names the step, the batch and its structures (indices in the training split, mapped to the files by
  ``splits.json``) and the last checkpoint written before it (whose weights are still finite).
- ``skip``: the batch is dropped, no optimizer step (and no EMA update) is taken, and
  ``train/skipped_batches`` (logged at each epoch's end) counts the skips so far (kept in
  checkpoints: a resumed run goes on counting). The learning-rate schedule still advances.

The loss is a mean over every device (:func:`.reduction.combine`), so all ranks see the same value
and decide alike; a skipped step still runs backward, so DDP's gradient exchange stays in step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import NumericalFault
from ..run_directory import LAST_CHECKPOINT as LAST

POLICIES = ("stop", "skip")


class NonFiniteLossGuard:
    """Mixin for the training tasks: call :meth:`finite_loss` in ``training_step``; it answers whether
    the loss may be logged and stepped on. Needs ``self.task_cfg``."""

    skipped_batches: int = 0
    step_skipped: bool = False  # this training batch is dropped: no optimizer step, no EMA update

    @property
    def skips_nonfinite(self) -> bool:
        return self.task_cfg.nonfinite_loss == "skip"

    def finite_loss(self, loss: Tensor, batch, batch_idx: int) -> bool:
        self.step_skipped = False
        if bool(torch.isfinite(loss)):
            return True
        if self.skips_nonfinite:
            self.step_skipped = True
            self.skipped_batches += 1
            return False
        structures = batch.idx.tolist() if batch.idx is not None else "unknown"
        value = float(loss.detach())
        raise NumericalFault(
            f"non-finite loss ({value}) at step {self.global_step}, batch {batch_idx} of epoch "
            f"{self.current_epoch} (training-split structures {structures}, see splits.json); last "
            f"checkpoint: {self._last_checkpoint()}; set task.nonfinite_loss=skip to skip such batches"
        )

    def _last_checkpoint(self) -> str:
        trainer = self._trainer
        dirpath = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
        last = Path(dirpath) / LAST if dirpath else None
        return str(last) if last is not None and last.exists() else "none written yet"

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """Lightning's step, except after a skipped batch: the closure (training step, backward) runs,
        then the gradients are dropped instead of stepped on."""
        if optimizer_closure is None or not self.skips_nonfinite:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()
        if self.step_skipped:
            optimizer.zero_grad(set_to_none=True)
            return None
        return optimizer.step(closure=lambda: loss)

    def on_train_epoch_end(self) -> None:
        """Log the batches skipped so far (with ``skip``), once per epoch."""
        if self.skips_nonfinite:
            self.log("train/skipped_batches", float(self.skipped_batches))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_batches = int(checkpoint.get("skipped_batches", 0))
