"""Exponential moving average of the weights, with the usual warm-up of the decay.

``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so a short run's average is not
dominated by the random initial weights (as in nequip and torchmd-net).
"""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


def warmed_ema(decay: float) -> Callable[[Tensor, Tensor, Tensor | int], Tensor]:
    def average(averaged: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        t = float(num_averaged)
        rate = min(decay, (1.0 + t) / (10.0 + t))
        return averaged * rate + current * (1.0 - rate)

    return average


class EMA(WeightAveraging):
    """Lightning's weight-averaging callback with a warmed-up EMA: the averaged weights are used for
    validation, saved in checkpoints and copied into the model when training ends."""

    def __init__(self, decay: float):
        super().__init__(avg_fn=warmed_ema(decay), use_buffers=True)
