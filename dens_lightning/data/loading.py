"""The loaders' building blocks: samplers and the dataset of structures (batches: ``graph.collate``).

Training batches come from :class:`ResumableSampler` (a :class:`DistributedSampler` seeded with the
run's seed, also on one device); evaluation sets are dealt out to the ranks without the sampler's
padding (:class:`ShardSampler`), so no structure counts twice.
"""

from __future__ import annotations

import math

import lightning
import torch
from torch.utils.data import Dataset, DistributedSampler

from .graph import Graph
from .structures import Structures


class ResumableSampler(DistributedSampler):
    """:class:`DistributedSampler` (a new permutation each epoch from the run's seed, the same on every
    rank) that a resumed run starts where it was interrupted: :meth:`resume`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0  # samples of the next epoch to leave out

    def resume(self, trainer: lightning.Trainer | None, batch_size: int) -> None:
        """In a resumed run, start at the interrupted epoch's permutation (Lightning sets the epoch only
        after its first batch is fetched) and after the batches already trained on in it."""
        if trainer is None or not trainer.fit_loop.restarting:
            return
        self.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if 0 < done < math.ceil(len(self) / batch_size):
            self.skip = done * batch_size

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` takes structures ``r, r + W, r + 2W, ...`` in order: every structure once,
    no padding (the ranks may hold one structure more or less). For validation and test, whose
    metrics add sums and counts over the ranks and so stay exact."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class StructureDataset(Dataset):
    def __init__(self, structures: Structures, dtype: torch.dtype = torch.float32):
        self.structures = structures
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, i: int) -> Graph:
        return self.structures.graph(i, self.dtype)
