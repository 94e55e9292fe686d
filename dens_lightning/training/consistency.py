"""A check, at the start of every multi-process run, that every rank holds the same data."""

from __future__ import annotations

import math

import lightning
from lightning.pytorch.callbacks import Callback

from ..errors import InputError


def disagreement(mine: dict, zero: dict) -> str | None:
    """What differs between this rank's data summary and rank zero's, or None. A summary holds the
    split's ``fingerprint``, the per-element ``references`` (eV) and the ``scale``."""
    if mine["fingerprint"] != zero["fingerprint"]:
        return "its data split or data files differ from rank 0's"
    if set(mine["references"]) != set(zero["references"]):
        return "its training elements differ from rank 0's"
    pairs = [(mine["scale"], zero["scale"])]
    pairs += [(value, zero["references"][z]) for z, value in mine["references"].items()]
    if any(not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in pairs):
        return "its fitted statistics differ from rank 0's"
    return None


class SameDataOnEveryRank(Callback):
    """Every rank reads and splits the data itself (the split is seeded, or read from
    ``splits.json``) and fits the statistics on its copy; DDP then copies rank zero's statistics
    (model buffers) to every rank. Before the first step, all ranks compare their split, data files
    and statistics with rank zero's, and all stop together with one error if any differs (nodes
    that see different files, say), instead of training on silently different data."""

    def setup(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        if trainer.world_size == 1 or trainer.datamodule is None:
            return
        data = trainer.datamodule
        mine = {"fingerprint": data.fingerprint(), "references": data.references, "scale": data.scale}
        problem = disagreement(mine, trainer.strategy.broadcast(mine, src=0))
        if not trainer.strategy.reduce_boolean_decision(problem is None, all=True):
            raise InputError(
                f"rank {trainer.global_rank}: {problem or 'another rank disagrees with rank 0'}; every "
                "process must read the same data files, seed and run directory (a shared file system)"
            )
