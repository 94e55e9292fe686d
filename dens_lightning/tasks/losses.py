"""The two forms of each loss term (``task.loss``): squared errors, or the norm form of the DeNS
reference code (Liao et al. 2024, ``main_md17_dens.py``).

- ``squared``: energies ``((E - E_ref) / N / s)²`` per structure; forces and noise
  ``(Δ / s)²`` per Cartesian component (mean squared error).
- ``norm``: energies ``|E - E_ref| / N / s`` per structure (L1); forces and noise ``‖Δ_i‖ / s``, the
  Euclidean norm of each atom's error vector, not squared (the reference's L2MAE).

``s`` is the training set's force RMS for energies and forces (1 for the noise target ``eps/sigma``,
already of unit variance). The gradient of a norm term with respect to its scaled predictions has
an L1 norm of at most its weight whatever the residuals, so each term pulls with its weight; a
squared term pulls in proportion to its residuals, so a term whose residuals stay large (denoising)
outweighs one whose residuals shrink (forces) as training goes on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reduction import Mean, masked_sum

FORMS = ("squared", "norm")


def loss_form(task_cfg, term: str) -> str:
    """The form ``task.loss`` sets for ``energy``, ``forces`` or ``noise``."""
    return getattr(task_cfg.loss, term)


def scalar_errors(residual: Tensor, form: str) -> Tensor:
    """Per-structure errors [B] of scaled residuals [B]: squared, or absolute (``norm``)."""
    return residual.pow(2) if form == "squared" else residual.abs()


def vector_errors(residual: Tensor, form: str) -> Tensor:
    """Errors of scaled per-atom residual vectors [N, 3]: per component [N, 3] (``squared``), or the
    norm of each atom's vector [N] (``norm``; its gradient at an exact zero residual is zero)."""
    if form == "squared":
        return residual.pow(2)
    return torch.linalg.vector_norm(residual, dim=-1)


def vector_loss(prediction: Tensor, target: Tensor, form: str, mask: Tensor | None = None) -> Mean:
    """The mean error of per-atom vectors over the atoms of ``mask`` [N] (all without one)."""
    return masked_sum(vector_errors(prediction - target, form), mask)
