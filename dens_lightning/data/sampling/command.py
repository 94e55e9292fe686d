"""The work of the ``sample`` command: molecules → conformations sampled in shards → an extxyz file
or a conformation store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from .molecules import read_molecules
from .output import to_atoms, write_extxyz
from .sampler import Sampler, SamplingReport


@dataclass
class SampledFile:
    """What :func:`sample_to_file` wrote."""

    path: Path
    conformations: int  # written
    molecules: int  # sampled
    report: SamplingReport = field(default_factory=SamplingReport)  # summed over shards
    short: list[str] = field(default_factory=list)  # molecules with fewer conformations than asked


def sample_to_file(
    out: str | Path,
    *,
    smiles: list[str] | None = None,
    smiles_file: str | Path | None = None,
    sdf: str | Path | None = None,
    num: int,
    method: str = "normal-mode",
    temperature: float = 300.0,
    displacement: float = 0.05,
    conformers: int = 1,
    label: str = "none",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> SampledFile:
    """Sample ``num`` conformations of each molecule (``conformers`` conformers each) on ``workers``
    processes (None: every available core) and write them to ``out``: extxyz when it has a suffix,
    else a memory-mapped conformation store (a directory). Finished shards are kept in
    ``<out>.partial`` until ``out`` is written, so a rerun continues a killed one."""
    from ..shards import available_cores, remove_work_dir, sample_sharded  # shards imports this package

    out = Path(out)
    if num < 1:
        raise InputError(f"--num {num}: expected at least 1 conformation per molecule")
    if conformers < 1:
        raise InputError(f"--conformers {conformers}: expected at least 1 conformer per molecule")
    molecules = read_molecules(smiles, smiles_file, sdf)
    sampler = Sampler(
        method=method,
        temperature=temperature,
        displacement=displacement,
        conformers=conformers,
        samples=-(-num // conformers),
        labeller=label,
        seed=seed,
    )
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: expected at least 1 process")
    info = sampler.describe()
    work_dir = out.with_name(out.name + ".partial")  # finished shards: a rerun continues
    workers = workers or available_cores()
    result = sample_sharded(molecules, sampler, work_dir, num, workers, progress=progress)
    if out.suffix:
        write_extxyz(out, [to_atoms(sample, info) for sample in result.samples])
    else:  # no extension: a memory-mapped store, read lazily by pretrain/finetune data.path
        from ..store import write_store

        write_store(out, result.samples, info)
    remove_work_dir(work_dir)
    return SampledFile(out, len(result.samples), len(molecules), result.report, result.short)
