"""Gradient clipping that logs the gradient norm before clipping (``train/grad_norm``).

The total norm is the Euclidean norm of the per-parameter norms that are not exactly zero. Leaving
exact zeros out does not change its value, but it keeps the floating-point sum the same whether or
not a module with zero gradient (a DeNS noise head on a step without corrupted atoms) takes part:
with ``task.dens.probability=0`` a run clips, and so trains, exactly like one without DeNS.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor


def gradient_norm(gradients: list[Tensor | None]) -> Tensor:
    """The Euclidean norm of all ``gradients`` together (None: no gradient)."""
    grads = [g for g in gradients if g is not None]
    if not grads:
        return torch.zeros(())
    norms = torch.stack(torch._foreach_norm(grads))  # one kernel for all, as torch's own clipping
    return torch.linalg.vector_norm(norms[norms != 0])


class LoggedGradientClipping:
    """Mixin for the training tasks: ``trainer.gradient_clip_val`` (by norm, or by value with
    ``gradient_clip_algorithm=value``) as Lightning does it, with the norm before clipping logged
    every step. Under FSDP (sharded parameters) Lightning's own clipping runs, unlogged."""

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if isinstance(self.trainer.strategy, FSDPStrategy):
            return self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        norm = gradient_norm([p.grad for p in parameters])
        self.log("train/grad_norm", norm, on_step=True, on_epoch=True, batch_size=1)
        if not gradient_clip_val:
            return None
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
            return None
        coefficient = torch.clamp(gradient_clip_val / (norm + 1e-6), max=1.0)
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, coefficient.to(grads[0].device, grads[0].dtype))
        return None
