"""The one model both stages train: a :class:`~.potential.Potential` (backbone and energy head) with
the heads of denoising, a noise head and, for DeNS, a force encoder.

Pretraining by denoising uses the noise head only (the energy head is there, frozen, so that a
pretrained and a finetuned model have the same shape); supervised and DeNS pretraining and
finetuning use the energy head, DeNS also the noise head and the encoder. The tasks corrupt
positions and call :meth:`TrainingModel.denoise`; the shareable model file holds the potential.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.graph import Graph
from .base import Backbone
from .potential import Potential

# checkpoint key prefixes before the model was one object → today's (pretraining held the backbone
# and heads directly, finetuning a ``potential`` beside the DeNS heads)
FORMER_PREFIXES = {
    "potential.": "model.potential.",
    "backbone.": "model.potential.backbone.",
    "noise_head.": "model.noise_head.",
    "force_encoder.": "model.force_encoder.",
}


class TrainingModel(nn.Module):
    """A potential and the denoising heads its training uses (either may be None)."""

    def __init__(
        self,
        potential: Potential,
        noise_head: nn.Module | None = None,
        force_encoder: nn.Module | None = None,
    ):
        super().__init__()
        self.potential = potential
        self.noise_head = noise_head
        self.force_encoder = force_encoder

    @property
    def backbone(self) -> Backbone:
        return self.potential.backbone

    def denoise(
        self, batch: Graph, pos: Tensor | None, encode: Tensor | None = None, with_energy: bool = False
    ) -> dict[str, Tensor]:
        """``noise``: the predicted ``eps / sigma`` [N, 3] of ``batch`` at positions ``pos`` (None: at
        its own, neighbour list kept), neighbours built there; with a force encoder, the labelled
        forces of the atoms in ``encode`` [N] (bool) are encoded into the backbone's input. With
        ``with_energy``, also the potential's ``energy`` and ``forces`` at those positions, from the
        same forward pass (forces keep their graph, for a force loss)."""
        graph = batch if pos is None else batch.with_positions(pos)
        if with_energy or self.noise_head.needs_position_grad:
            graph = graph.replace(pos=graph.pos.detach().requires_grad_(True))
        graph = self.potential.prepare(graph)
        with torch.enable_grad():
            node_inputs = None
            if self.force_encoder is not None and encode is not None:
                node_inputs = self.force_encoder(graph, batch.forces, encode)
            if not with_energy:
                return {"noise": self.noise_head(self.backbone(graph, node_inputs), graph)}
            out = self.potential(graph, compute_forces=True, create_graph=True, node_inputs=node_inputs)
        return {**out, "noise": self.noise_head(out["features"], graph)}


def current_layout(state: dict[str, Tensor], model_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A task's ``state_dict`` with keys of the former layout renamed (:data:`FORMER_PREFIXES`), and
    tensors the former layout did not have (a denoising pretraining's unused energy head) taken from
    ``model_state``, the task's own state; a state in today's layout comes back unchanged."""
    if any(key.startswith("model.") for key in state):
        return state
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in FORMER_PREFIXES if key.startswith(p)), None)
        renamed[FORMER_PREFIXES[prefix] + key.removeprefix(prefix) if prefix else key] = value
    head = "model.potential.energy_head."
    added = {k: v for k, v in model_state.items() if k.startswith(head) and k not in renamed}
    return {**added, **renamed}
