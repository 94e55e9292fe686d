"""Exponential moving average of the weights, with the usual warm-up of the decay.

``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so a short run's average is not
dominated by the random initial weights (as in nequip and torchmd-net).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


def warmed_decay(decay: float, num_averaged: Tensor | int) -> float:
    """The decay after ``num_averaged`` updates."""
    t = float(num_averaged)
    return min(decay, (1.0 + t) / (10.0 + t))


def warmed_ema(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor | int], None]:
    """An in-place average of lists of tensors of one device and dtype (``multi_avg_fn`` of
    :class:`torch.optim.swa_utils.AveragedModel`): ``averaged ← decay_t · averaged + (1 - decay_t) ·
    current`` in one foreach kernel for all of them; integer buffers (counters) follow the model."""

    def average(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        torch._foreach_lerp_(averaged, current, 1.0 - warmed_decay(decay, num_averaged))

    return average


class EMA(WeightAveraging):
    """Lightning's weight-averaging callback with a warmed-up EMA: the averaged weights are used for
    validation, saved in checkpoints and copied into the model when training ends."""

    def __init__(self, decay: float):
        super().__init__(multi_avg_fn=warmed_ema(decay), use_buffers=True)

    def setup(self, trainer, pl_module, stage: str) -> None:
        """The averaged copy in the precision the model will train in (``trainer.precision=64-true``
        converts the model after this hook: without this, the average would be kept in float32, and a
        resumed run's float64 average truncated on loading)."""
        super().setup(trainer, pl_module, stage)
        if self._average_model is not None:
            self._average_model = trainer.precision_plugin.convert_module(self._average_model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """No update after a batch that ``task.nonfinite_loss=skip`` dropped: no weight changed, so
        the average and its count stay as they were."""
        if getattr(pl_module, "step_skipped", False):
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
