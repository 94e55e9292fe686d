"""Sampling and labelling large conformation sets: in worker processes, a few molecules at a time,
each finished shard saved to a work directory, so a killed run continues where it stopped.

Every molecule draws from its own random stream (:meth:`Sampler.molecule_rng`), so the samples do
not depend on the number of workers, the shard size or how often the run was interrupted: the
conformations come back in molecule order, the same as one process sampling them in one go.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import replacing, write_text_atomic
from .sampling import Molecule, Sample, Sampler, SamplingReport

log = logging.getLogger("dens_lightning")

SPEC = "spec.json"
COUNTS = tuple(f.name for f in dataclasses.fields(SamplingReport))  # saved in each shard, in this order


@dataclass
class ShardedResult:
    samples: list[Sample] = dataclasses.field(default_factory=list)
    report: SamplingReport = dataclasses.field(default_factory=SamplingReport)  # summed over shards
    short: list[str] = dataclasses.field(default_factory=list)  # molecules with fewer than asked


def sample_sharded(
    molecules: list[Molecule],
    sampler: Sampler,
    work_dir: str | Path,
    per_molecule: int | None = None,
    workers: int = 1,
    shard_size: int = 8,
    progress: bool = False,
) -> ShardedResult:
    """Sample every molecule (``per_molecule`` conformations each at most; None: all the sampler
    draws), ``shard_size`` molecules per task on ``workers`` processes, saving each finished shard in
    ``work_dir``; shards found there from an interrupted run with the same settings are reused. The
    caller removes ``work_dir`` (:func:`remove_work_dir`) once it has written what it needs."""
    work_dir = Path(work_dir)
    spec = _spec(molecules, sampler, per_molecule, shard_size)
    _claim(work_dir, spec)
    starts = range(0, len(molecules), shard_size)
    shards = [range(start, min(start + shard_size, len(molecules))) for start in starts]
    pending = [k for k, _ in enumerate(shards) if not _shard_path(work_dir, k).exists()]
    tasks = [(k, [(i, molecules[i]) for i in shards[k]]) for k in pending]
    with _progress(progress, len(shards), len(shards) - len(pending)) as advance:
        if workers <= 1 or len(tasks) <= 1:  # one process: no worker start-up to pay
            for k, items in tasks:
                _save_shard(work_dir, k, _sample_shard(sampler, items, per_molecule))
                advance()
        else:
            with ProcessPoolExecutor(workers, mp_context=_spawn(), initializer=_one_thread) as pool:
                futures = {pool.submit(_sample_shard, sampler, items, per_molecule): k for k, items in tasks}
                for future in as_completed(futures):
                    _save_shard(work_dir, futures[future], future.result())
                    advance()
    result = ShardedResult()
    for k in range(len(shards)):
        _read_shard(_shard_path(work_dir, k), molecules, result)
    return result


def sample_beside(
    path: Path,
    molecules: list[Molecule],
    sampler: Sampler,
    write: Callable[[ShardedResult], None],
    shard_size: int = 8,
    progress: bool = False,
) -> None:
    """Sample ``molecules`` on every available core, the shards saved beside ``path``
    (``<name>.partial``) so a killed run continues where it stopped; ``write(result)`` then makes
    ``path``, and the shards are removed."""
    workers, labels = available_cores(), sampler.labeller
    log.info("sampling %d molecules (labels: %s) on %d processes: %s", len(molecules), labels, workers, path)
    work_dir = path.with_name(path.name + ".partial")
    result = sample_sharded(
        molecules, sampler, work_dir, workers=workers, shard_size=shard_size, progress=progress
    )
    write(result)
    remove_work_dir(work_dir)


def sample_to_store(
    path: Path,
    molecules: list[Molecule],
    sampler: Sampler,
    info: dict,
    shard_size: int = 8,
    progress: bool = False,
) -> None:
    """:func:`sample_beside` into the conformation store ``path``; ``info`` goes into the store's
    ``info.json`` with the sampler's settings and counts."""
    from .store import write_store

    def write(result: ShardedResult) -> None:
        report = dataclasses.asdict(result.report)
        write_store(path, result.samples, {**info, "sampler": sampler.describe(), **report})

    sample_beside(path, molecules, sampler, write, shard_size, progress)


def remove_work_dir(work_dir: str | Path) -> None:
    """Remove the shards once what they hold is written elsewhere."""
    shutil.rmtree(work_dir, ignore_errors=True)


def _spec(molecules: list[Molecule], sampler: Sampler, per_molecule: int | None, shard_size: int) -> dict:
    settings = {f.name: getattr(sampler, f.name) for f in dataclasses.fields(sampler) if f.name != "report"}
    digest = hashlib.sha256("\n".join(m.smiles for m in molecules).encode())
    for molecule in molecules:
        if molecule.minimum is not None:
            digest.update(np.ascontiguousarray(molecule.minimum, dtype=np.float64).tobytes())
    return {
        "sampler": settings,
        "molecules_sha256": digest.hexdigest(),
        "per_molecule": per_molecule,
        "shard": shard_size,
    }


def _claim(work_dir: Path, spec: dict) -> None:
    """Create ``work_dir`` for ``spec``, or check that the partial run it holds had the same settings."""
    saved = work_dir / SPEC
    if saved.exists():
        if json.loads(saved.read_text()) != spec:
            raise InputError(
                f"{work_dir}: holds the shards of an interrupted run with other settings; remove it to "
                "start over"
            )
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, json.dumps(spec, sort_keys=True))


def _shard_path(work_dir: Path, k: int) -> Path:
    return work_dir / f"shard-{k:06d}.npz"


def _sample_shard(sampler: Sampler, items: list[tuple[int, Molecule]], per_molecule: int | None) -> dict:
    """The conformations of a few molecules as arrays, with the shard's counts (runs in a worker)."""
    sampler = dataclasses.replace(sampler, report=SamplingReport())
    samples, molecule, short = [], [], []
    for index, item in items:
        drawn = list(sampler.sample_molecule(item, sampler.molecule_rng(index)))
        if per_molecule is not None:
            if len(drawn) < per_molecule:
                short.append(index)
            drawn = drawn[:per_molecule]
        samples += drawn
        molecule += [index] * len(drawn)
    sizes = [len(s.numbers) for s in samples]
    labelled = bool(samples) and all(s.energy is not None for s in samples)
    return {
        "numbers": np.concatenate([s.numbers for s in samples]) if samples else np.zeros(0, np.int64),
        "positions": np.concatenate([s.positions for s in samples]) if samples else np.zeros((0, 3)),
        "sizes": np.asarray(sizes, dtype=np.int64),
        "molecule": np.asarray(molecule, dtype=np.int64),
        "conformer": np.asarray([s.conformer for s in samples], dtype=np.int64),
        "energy": np.asarray([s.energy for s in samples] if labelled else [], dtype=np.float64),
        "forces": np.concatenate([s.forces for s in samples]) if labelled else np.zeros((0, 3)),
        "counts": np.asarray([getattr(sampler.report, name) for name in COUNTS]),
        "short": np.asarray(short, dtype=np.int64),
    }


def _save_shard(work_dir: Path, k: int, arrays: dict) -> None:
    with replacing(_shard_path(work_dir, k)) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def _read_shard(path: Path, molecules: list[Molecule], result: ShardedResult) -> None:
    with np.load(path, allow_pickle=False) as shard:
        arrays = {name: shard[name] for name in shard.files}
    for name, count in zip(COUNTS, arrays["counts"]):
        setattr(result.report, name, getattr(result.report, name) + int(count))
    result.short += [molecules[int(i)].smiles for i in arrays["short"]]
    ptr = np.concatenate([[0], np.cumsum(arrays["sizes"])])
    labelled = len(arrays["energy"]) == len(arrays["sizes"])
    for j, index in enumerate(arrays["molecule"]):
        atoms = slice(ptr[j], ptr[j + 1])
        result.samples.append(
            Sample(
                numbers=arrays["numbers"][atoms],
                positions=arrays["positions"][atoms],
                smiles=molecules[int(index)].smiles,
                conformer=int(arrays["conformer"][j]),
                energy=float(arrays["energy"][j]) if labelled else None,
                forces=arrays["forces"][atoms] if labelled else None,
            )
        )


def _spawn():
    """Fresh worker processes: forking a process whose OpenMP runtime is running (torch) can hang."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


def _one_thread() -> None:
    """Each worker labels on one thread (xTB's OpenMP), so ``workers`` processes use ``workers`` cores."""
    os.environ["OMP_NUM_THREADS"] = "1"


class _progress:
    """A rich progress bar over shards (or nothing); ``advance()`` marks one shard done."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.bar = Progress(transient=False)
        self.bar.start()
        task = self.bar.add_task("sampling and labelling (shards)", total=self.total, completed=self.done)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()


def available_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
