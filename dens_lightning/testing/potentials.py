"""Small potentials and noise predictors with fixed seeds, and the tolerances of the checks."""

from __future__ import annotations

from typing import Any

import torch

from ..models.potential import Potential
from ..tasks.pretrain import DenoisingPretraining

# tolerances of the comparisons, by precision
DTYPES = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}


def make_potential(name: str, hyperparameters: dict[str, Any], dtype: torch.dtype) -> Potential:
    """The backbone ``name`` (seed 0) under an energy head with non-trivial statistics, in eval mode."""
    torch.manual_seed(0)
    potential = Potential.build(name, dict(hyperparameters))
    # non-trivial head statistics, so shifts and scales take part in every check
    potential.energy_head.set_statistics({1: -13.6, 6: -1030.0, 7: -1485.0, 8: -2040.0}, 2.0)
    return potential.to(dtype).eval()


def energy_forces(potential: Potential, graph) -> tuple[torch.Tensor, torch.Tensor]:
    out = potential(graph, compute_forces=True)
    return out["energy"].detach(), out["forces"].detach()


def make_noise_predictor(
    name: str, hyperparameters: dict[str, Any], dtype: torch.dtype, blocks: int = 0
) -> DenoisingPretraining:
    """A denoising task (seed 0) on the backbone ``name``, its noise head running ``blocks``
    message-passing blocks before the readout, in eval mode."""
    torch.manual_seed(0)
    noise = {"sigma": 0.1, "head_blocks": blocks}
    task = DenoisingPretraining(name, dict(hyperparameters), {"lr": 1e-3, "noise": noise})
    return task.to(dtype).eval()
