"""Replay data (``finetune.replay``): labelled structures of other molecules, read once, and the
batch each training step draws from them.

Batches are drawn by step, not by a loader: the replay set is walked through in permutations keyed
by the run's seed (a new one each time the set is used up), step ``t`` of ``W`` ranks of batch ``B``
takes positions ``[t·W·B, (t+1)·W·B)`` of that walk and rank ``r`` the ``r``-th ``B`` of them. A
resumed run draws the batches the uninterrupted run would have drawn, and ``W`` ranks of batch
``B`` together draw what one process of batch ``W·B`` draws.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .graph import Graph, collate
from .readers import ReadOptions, read_structures
from .structures import Structures, StructureView

PRETRAINING = "pretraining"  # finetune.replay.data: the packaged pretraining set
REPLAY_STREAM = 0x5E9A  # keeps the replay permutations apart from every other seeded draw


def replay_structures(replay_cfg, pretraining_embedded=None) -> Structures | StructureView:
    """The labelled replay set of ``finetune.replay``: a structure file or store, or with
    ``data: pretraining`` the packaged pretraining set (``pretraining_embedded``: its
    ``data.embedded`` section) labelled by ``replay.labeller``, made and cached on first use."""
    source = str(replay_cfg.data)
    if source == PRETRAINING:
        from .embedded import embedded_dataset
        from .store import open_store

        spec = dict(pretraining_embedded) | {"labeller": replay_cfg.labeller}
        structures = open_store(embedded_dataset(spec, lazy=True))
    else:
        structures = read_structures(source, ReadOptions())
    missing = [name for name in ("energy", "forces") if getattr(structures, name, None) is None]
    if missing:
        raise InputError(
            f"{source}: finetune.replay.data has no {' or '.join(missing)}; replay needs energies and "
            "forces (label a set with: sample --label xtb)"
        )
    if isinstance(structures.pos, np.memmap):  # a store: read structure by structure, never whole
        return structures.view(np.arange(len(structures)))
    return structures


class ReplayBatches:
    """The replay batch of each training step (see the module docstring)."""

    def __init__(self, structures: Structures | StructureView, batch_size: int, seed: int):
        if len(structures) == 0:
            raise InputError(f"{structures.source}: finetune.replay.data holds no structures")
        self.structures = structures
        self.batch_size = batch_size
        self.seed = seed
        self._permutations: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the replay set in its ``epoch``-th pass (the last two are kept)."""
        if epoch not in self._permutations:
            rng = np.random.default_rng([self.seed, REPLAY_STREAM, epoch])
            self._permutations = {k: v for k, v in self._permutations.items() if k == epoch - 1} | {
                epoch: rng.permutation(len(self.structures))
            }
        return self._permutations[epoch]

    def indices(self, step: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """Indices into the replay set of rank ``rank``'s batch at optimizer step ``step``."""
        size = len(self.structures)
        start = (step * world + rank) * self.batch_size
        positions = np.arange(start, start + self.batch_size)
        return np.array([self.permutation(int(p // size))[p % size] for p in positions], dtype=np.int64)

    def batch(self, step: int, rank: int = 0, world: int = 1, dtype: torch.dtype = torch.float32) -> Graph:
        """Rank ``rank``'s replay batch at step ``step`` (no neighbour list: the model builds it)."""
        return collate([self.structures.graph(int(i), dtype) for i in self.indices(step, rank, world)])
