"""What every group of conformance checks shares: the backbone under test, its size, the fixtures
(precision, molecules, their batch) and the helpers building its models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
import torch

from ..models import BACKBONES
from ..models.base import Backbone
from ..models.potential import Potential
from ..tasks.pretrain import DenoisingPretraining
from .molecules import batch_of_molecules, three_molecules
from .potentials import DTYPES, make_noise_predictor, make_potential


class ConformanceBase:
    """Set ``backbone`` (a registered name) and ``hyperparameters`` (its size) in a subclass named
    ``Test...``; pytest collects every ``test_*`` method of the subclass (never of a class here, whose
    ``__test__`` is False: a subclass gets ``__test__ = True`` unless it sets it itself)."""

    __test__ = False
    backbone: ClassVar[str]
    hyperparameters: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__test__" not in cls.__dict__:
            cls.__test__ = True

    # ------------------------------------------------------------ fixtures

    @pytest.fixture(params=list(DTYPES), ids=["float32", "float64"])
    def dtype(self, request) -> torch.dtype:
        return request.param

    @pytest.fixture
    def molecules(self):
        """Three random molecules of 5, 9 and 13 atoms (seed 0)."""
        return three_molecules()

    @pytest.fixture
    def batch_of(self, molecules):
        """``batch_of(dtype=torch.float64)``: the ``molecules`` collated into one batch."""

        def make(dtype=torch.float64):
            return batch_of_molecules(molecules, dtype)

        return make

    # ------------------------------------------------------------ helpers

    @property
    def backbone_class(self) -> type[Backbone]:
        if getattr(self, "backbone", None) is None:
            raise TypeError(f"{type(self).__name__} sets no `backbone` (a registered backbone name)")
        if self.backbone not in BACKBONES:
            raise KeyError(f"{self.backbone!r} is not a registered backbone; known: {sorted(BACKBONES)}")
        return BACKBONES[self.backbone]

    def make_potential(self, dtype: torch.dtype) -> Potential:
        self.backbone_class  # noqa: B018  (a clear error for an unset or unregistered name)
        return make_potential(self.backbone, self.hyperparameters, dtype)

    def make_noise_predictor(self, dtype: torch.dtype, blocks: int = 0) -> DenoisingPretraining:
        self.backbone_class  # noqa: B018
        return make_noise_predictor(self.backbone, self.hyperparameters, dtype, blocks)
