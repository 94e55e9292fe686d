"""The rMD17 aspirin finetune setting shared by the transfer and DeNS experiments."""

from __future__ import annotations

from bench.common import ASPIRIN_NPZ as ASPIRIN
from bench.common import ROOT

__all__ = ["ASPIRIN", "ROOT", "aspirin_overrides"]


def aspirin_overrides(frames: int, steps: int, seed: int) -> list[str]:
    """``frames`` training, 50 validation and 800 test frames (disjoint, fixed by ``seed``), batch 16,
    ``steps`` optimizer steps."""
    return [
        f"data.path={ASPIRIN}",
        "data.energy_key=E_shifted",
        "data.units=kcal/mol",
        f"data.split=[{frames},50,800]",
        "data.batch_size=16",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        f"seed={seed}",
    ]
