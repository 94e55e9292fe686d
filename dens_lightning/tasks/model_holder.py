"""What both tasks share about the model they train: one :class:`~..models.training_model.TrainingModel`
(``self.model``), its parts by name, and checkpoints written before the model was one object."""

from __future__ import annotations

from torch import Tensor, nn

from ..models.base import Backbone
from ..models.potential import Potential
from ..models.training_model import TrainingModel, current_layout


class HoldsTrainingModel:
    """Mixin of a LightningModule with a ``model`` attribute (a :class:`TrainingModel`)."""

    model: TrainingModel

    @property
    def potential(self) -> Potential:
        return self.model.potential

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone

    @property
    def noise_head(self) -> nn.Module | None:
        return self.model.noise_head

    @property
    def force_encoder(self) -> nn.Module | None:
        return self.model.force_encoder

    def current_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A saved ``state_dict`` of this task in today's key layout (a former one is renamed)."""
        return current_layout(state, self.state_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint of the former layout resumes: its weights (and EMA's copy of them) renamed."""
        for key in ("state_dict", "current_model_state"):  # the latter: EMA's current weights
            if key in checkpoint:
                checkpoint[key] = self.current_state(checkpoint[key])
        super().on_load_checkpoint(checkpoint)
