"""Files → seeded splits (saved in the run directory) → statistics → loaders.

Under DDP every rank builds the same datamodule: the split is a seeded permutation (or the saved
``splits.json``), so it is identical on every rank, and only rank zero writes ``splits.json``
(atomically, so a rank starting at the same moment reads all of it or none; :mod:`.splits`). Training
batches come from a :class:`DistributedSampler` seeded with the run's seed, also on one device, so W
ranks of batch B see exactly the structures one process of batch W·B sees; evaluation sets are dealt
out to the ranks without the sampler's padding (:class:`~.loading.ShardSampler`), so no structure
counts twice. Each rank reads only its own structures: a memory-mapped pretraining store is never
read whole.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import InputError
from ..files import file_sha256
from ..run_directory import RunDirectory
from .checks import check_geometry, shortest_pair_distances
from .graph import collate
from .loading import ResumableSampler, ShardSampler, StructureDataset
from .readers import ReadOptions, read_structures
from .splits import draw_splits, read_splits, write_splits
from .statistics import energy_scale, reference_energies, statistics_sample
from .structures import Structures, StructureView


class AtomsDataModule(lightning.LightningDataModule):
    """Reads the configured files, splits them with a seed (``splits.json`` in the run directory,
    reused on resume), fits the statistics on the training split and serves loaders."""

    def __init__(
        self,
        data_cfg,
        cutoff: float,
        seed: int = 0,
        run_dir: str | Path | None = None,
        require_energy: bool = True,
        require_forces: bool = True,
        dtype: torch.dtype = torch.float32,
        lazy_default: bool = False,
        fit_statistics: bool = True,
        label_hints: dict[str, str] | None = None,
        is_global_zero: bool = True,
    ):
        """``lazy_default``: the default data (no file given) is read structure by structure (the
        pretraining sets: the embedded conformation store or QM9), its labels checked only as
        ``require_energy`` and ``require_forces`` ask. ``fit_statistics``: fit the per-element
        reference energies and the force scale on the training split (whatever fits energies or
        forces, or encodes forces, needs them). ``label_hints``: what the message about missing
        ``energy`` or ``forces`` labels suggests instead. Only with ``is_global_zero`` is
        ``splits.json`` written. The data module does not know which stage it feeds."""
        super().__init__()
        self.lazy_default = lazy_default
        self.fit_statistics = fit_statistics
        self.label_hints = {
            "energy": "set task.energy_weight=0",
            "forces": "set task.forces_weight=0 (and task.dens.force_encoding=false)",
            **(label_hints or {}),
        }
        self.cfg = data_cfg
        self.cutoff = cutoff
        self.seed = seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.require_energy = require_energy
        self.require_forces = require_forces
        self.dtype = dtype
        self.is_global_zero = is_global_zero
        self.splits: dict[str, Structures | StructureView] = {}
        self.split_indices: dict[str, np.ndarray] = {}
        self.provenance: dict = {}
        self.references: dict[int, float] = {}
        self.scale: float = 1.0
        self.isolated_atoms: int | None = None  # atoms with no neighbour in the cutoff (None: not checked)

    # -------------------------------------------------------------- reading and splitting

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            units=self.cfg.units,
            energy_key=self.cfg.energy_key,
            forces_key=self.cfg.forces_key,
            keys=dict(self.cfg["keys"]),
        )

    def _read(self, path: str | Path) -> Structures:
        structures = read_structures(path, self.read_options())
        self._check_labels(structures)
        if not isinstance(structures.pos, np.memmap):  # a store's conformations were checked when sampled
            isolated = check_geometry(structures, self.cutoff, self.cfg.min_distance)
            self.isolated_atoms = (self.isolated_atoms or 0) + isolated
        return structures

    def _check_labels(self, structures: Structures) -> None:
        if self.require_energy and structures.energy is None:
            raise InputError(
                f"{structures.source}: no energies found; name them with data.energy_key or "
                f"{self.label_hints['energy']}"
            )
        if self.require_forces and getattr(structures, "forces", None) is None:
            raise InputError(
                f"{structures.source}: no forces found; name them with data.forces_key or "
                f"{self.label_hints['forces']}"
            )

    @property
    def uses_default_data(self) -> bool:
        return not (self.cfg.path or self.cfg.train)

    @property
    def lazy(self) -> bool:
        """Whether the data is read structure by structure (the pretraining defaults)."""
        return self.lazy_default and self.uses_default_data

    def prepare_data(self) -> None:
        """Make the default data set once (rank 0), before every rank reads it in ``setup``."""
        if self.uses_default_data and self.cfg.source == "embedded":
            from .embedded import embedded_dataset

            embedded_dataset(self.cfg.embedded, lazy=self.lazy)
        elif self.uses_default_data and self.cfg.source == "qm9":
            from .qm9 import qm9_source

            qm9_source(self.cfg.qm9)

    def _default_source(self) -> tuple[Structures, str | None, dict]:
        """The default data (no file given): structures, labeller and provenance details."""
        cfg = self.cfg
        if cfg.source == "qm9":
            from .qm9 import qm9_source

            structures, info = qm9_source(cfg.qm9)
            return structures, info.get("labeller"), {"qm9": info}
        from .embedded import embedded_dataset
        from .sampling import resolve_labeller

        path = embedded_dataset(cfg.embedded, lazy=self.lazy)
        labeller = resolve_labeller(cfg.embedded.labeller)
        if self.lazy:
            from .store import open_store, store_info

            info = store_info(path)
            summary = {k: info.get(k) for k in ("structures", "kept", "rejected_bonds", "sampler")}
            return open_store(path), labeller, {"embedded_store": {"path": str(path), **summary}}
        return self._read(path), labeller, {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cfg = self.cfg
        if cfg.path and cfg.train:
            raise InputError(
                "config: data.path and data.train are both set; give one file to split, or explicit files"
            )
        labeller, extra = None, {}
        if self.uses_default_data:
            full, labeller, extra = self._default_source()
            source = full.source
            if self.lazy:  # read structure by structure: its labels are checked here, not per file
                self._check_labels(full)
        else:
            source = cfg.path or cfg.train
            full = self._read(source)
        indices = self._split_indices(full, explicit_val=bool(cfg.val), explicit_test=bool(cfg.test))
        self.split_indices = indices
        memory_mapped = isinstance(getattr(full, "pos", None), np.memmap)  # a store: never copied whole
        take = full.view if (self.lazy or memory_mapped) else full.subset
        self.splits = {name: take(idx) for name, idx in indices.items()}
        if cfg.val:
            self.splits["val"] = self._read(cfg.val)
        if cfg.test:
            self.splits["test"] = self._read(cfg.test)
        if len(self.splits.get("val", [])) == 0:
            raise InputError(
                f"data.split: {list(cfg.split)} leaves no validation structures; set data.val or data.split"
            )
        if self.fit_statistics:
            fitted_on = self.statistics_set()
            self.references = reference_energies(fitted_on)
            self.scale = energy_scale(fitted_on, self.references)
        files = {
            name: path
            for name, path in (("train", source), ("val", cfg.val), ("test", cfg.test))
            if path and Path(path).is_file()
        }
        self.provenance = {
            "files": {name: {"path": str(path), "sha256": file_sha256(path)} for name, path in files.items()},
            "sizes": {name: len(s) for name, s in self.splits.items()},
            "units_in_file": full.units,
            "isolated_atoms": self.isolated_atoms,
            "labeller": labeller,
            "embedded": self.uses_default_data and cfg.source == "embedded",
            **({"store": str(source)} if memory_mapped and not self.uses_default_data else {}),
            **extra,
        }

    def statistics_set(self) -> Structures:
        """The training structures the statistics are fitted on: all of them, or for a memory-mapped
        set a seeded sample (every rank draws the same; :func:`.statistics.statistics_sample`)."""
        return statistics_sample(self.splits["train"], self.seed)

    def shortest_pair_distances(self) -> dict[tuple[int, int], float]:
        """Each element pair's shortest distance (Å, within the cutoff) in :meth:`statistics_set`,
        by atomic numbers ``(Z_a, Z_b)``, ``Z_a <= Z_b``."""
        return shortest_pair_distances(self.statistics_set(), self.cutoff)

    def fingerprint(self) -> str:
        """A digest of the split (the indices into the data, and the sizes of every split) and of the
        data files: equal on every rank of a run that reads the same data."""
        digest = hashlib.sha256()
        for name in sorted(self.split_indices):
            digest.update(name.encode() + self.split_indices[name].astype(np.int64).tobytes())
        payload = {"files": self.provenance.get("files"), "sizes": self.provenance.get("sizes")}
        digest.update(json.dumps(payload, sort_keys=True).encode())
        return digest.hexdigest()

    def _split_indices(
        self, full: Structures, explicit_val: bool, explicit_test: bool
    ) -> dict[str, np.ndarray]:
        saved = RunDirectory(self.run_dir).splits if self.run_dir is not None else None
        if saved is not None and saved.exists():
            return read_splits(saved, len(full))
        indices = draw_splits(len(full), full.source, self.cfg.split, self.seed, explicit_val, explicit_test)
        if saved is not None and self.is_global_zero:
            write_splits(saved, self.seed, len(full), full.source, indices)
        return indices

    # -------------------------------------------------------------- loaders

    @property
    def eval_batch_size(self) -> int:
        """Structures per validation or test batch: ``data.eval_batch_size``, else ``data.batch_size``."""
        return self.cfg.eval_batch_size or self.cfg.batch_size

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        """Batches of ``data.batch_size`` (per device) for training, ``data.eval_batch_size`` else."""
        batch_size = self.cfg.batch_size if shuffle else self.eval_batch_size
        dataset = StructureDataset(self.splits[name], self.dtype)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if shuffle:  # a new permutation each epoch (Lightning calls set_epoch), the same on every rank
            sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
            sampler.resume(trainer, batch_size)
        else:
            sampler = ShardSampler(dataset, num_replicas=world, rank=rank)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=collate,  # the neighbour list is the model's to build
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            raise InputError("no test split: set data.test or a third data.split entry")
        return self._loader("test", shuffle=False)
