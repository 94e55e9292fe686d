"""Loss terms as sums and counts, so a mean over many devices is the mean over the whole batch.

Under DDP every rank sees ``B`` of the ``W·B`` structures of a step and DDP averages the ranks'
gradients. If each rank divided by its own atom count, structures of different sizes (or DeNS masks
that corrupt different numbers of atoms) would weight the ranks unequally, and ``W`` processes of
batch ``B`` would not train like one process of batch ``W·B``. Here each term is a :class:`Mean`
(sum, count); one all-reduce per step adds the counts of every rank, and each rank's term is
``W · sum_r / count_all``: the average of the ranks' gradients is then exactly the gradient of
``Σ_r sum_r / count_all``, the mean over the whole step. Validation and test add sums and counts
over the epoch and over ranks (:class:`MeanAccumulator`), so their numbers do not depend on how the
set was split into batches or devices either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric


@dataclass
class Mean:
    """A sum of values (it may carry gradient) and how many values it adds."""

    total: Tensor
    count: Tensor

    @property
    def value(self) -> Tensor:
        """The mean on this process; 0 (still in the graph) when nothing was counted."""
        return self.total / self.count.to(self.total.dtype).clamp_min(1.0)


def masked_sum(values: Tensor, mask: Tensor | None = None) -> Mean:
    """The values [K] or [K, ...] of the rows in ``mask`` [K] (every row without one). An empty mask
    gives ``0 · values``: every parameter stays in the graph, so DDP's gradient hooks still fire."""
    if mask is None:
        return Mean(values.sum(), values.new_tensor(float(values.numel())))
    weights = mask.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return Mean((values * weights).sum(), weights.sum())


def world(module) -> tuple[int, object | None]:
    """How many processes train ``module`` and its strategy (1 and None outside a trainer)."""
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return 1, None
    return trainer.world_size, trainer.strategy


def combine(
    module, terms: dict[str, Mean], weights: dict[str, float], parts: dict[str, Tensor] | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, logged)``: this rank's differentiable ``Σ_k w_k W sum_k / count_k,all`` and the
    detached means over every rank of each term and of the weighted loss (what to log). ``parts``,
    when given, receives each weighted term's differentiable share of the loss.

    One all-reduce (of every count and detached sum together) per call, on every rank: call it
    once per training step, on every rank alike.
    """
    names = list(terms)
    size, strategy = world(module)
    dtype = terms[names[0]].total.dtype
    local = torch.stack(
        [terms[k].total.detach() for k in names] + [terms[k].count.detach().to(dtype) for k in names]
    )
    summed = strategy.reduce(local, reduce_op="sum") if strategy is not None else local
    totals, counts = summed[: len(names)], summed[len(names) :].clamp_min(1.0)
    loss = terms[names[0]].total.new_zeros(())
    logged = {}
    for i, name in enumerate(names):
        logged[name] = totals[i] / counts[i]
        if name in weights:  # a zero weight still keeps the term's parameters in the graph (DDP)
            part = weights[name] * terms[name].total * (size / counts[i])
            loss = loss + part
            if parts is not None:
                parts[name] = part
    logged["loss"] = sum((weights.get(k, 0.0) * logged[k] for k in names), torch.zeros((), dtype=dtype))
    return loss, logged


class MeanAccumulator(Metric):
    """Sums and counts of named terms over an epoch, added across ranks when computed."""

    full_state_update = False

    def __init__(self, names: tuple[str, ...]):
        super().__init__(sync_on_compute=True)
        self.names = tuple(names)
        self.add_state("totals", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(len(self.names), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, terms: dict[str, Mean]) -> None:
        for i, name in enumerate(self.names):
            if name in terms:
                self.totals[i] += terms[name].total.detach().to(torch.float64)
                self.counts[i] += terms[name].count.detach().to(torch.float64)

    def compute(self) -> dict[str, float]:
        """The mean of each term that was counted at all."""
        return {
            name: float(self.totals[i] / self.counts[i])
            for i, name in enumerate(self.names)
            if self.counts[i] > 0
        }
