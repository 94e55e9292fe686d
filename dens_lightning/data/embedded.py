"""The embedded default data sets: sampled with RDKit on first use, cached in the user's cache directory.

Finetuning uses a small labelled set (six molecules, extxyz); pretraining a large unlabelled set
sampled from the bundled molecule list, written as a memory-mapped conformation store
(:mod:`dens_lightning.data.store`). The cache key is a hash of every generation setting.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

from ..files import exclusive
from .sampling import BUNDLED, Sampler, read_molecules, resolve_labeller, to_atoms, write_extxyz
from .shards import sample_beside, sample_to_store

FORMAT = 2  # bump when the generator changes, so old caches are not reused


def cache_dir() -> Path:
    """The cache: ``$DENS_LIGHTNING_CACHE``, else ``$XDG_CACHE_HOME/dens_lightning``, else
    ``~/.cache/dens_lightning``."""
    if os.environ.get("DENS_LIGHTNING_CACHE"):
        return Path(os.environ["DENS_LIGHTNING_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dens_lightning"


def _params(spec) -> dict:
    if is_dataclass(spec):
        return asdict(spec)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)


def embedded_molecules(params: dict) -> list:
    if params.get("smiles_file"):
        molecules = read_molecules(smiles_file=params["smiles_file"])
    else:
        molecules = read_molecules(smiles=list(params["smiles"]))
    return molecules[: params["limit"]] if params.get("limit") else molecules


def embedded_dataset(spec, lazy: bool = False) -> Path:
    """Path of the data set described by ``spec`` (an ``EmbeddedDataConfig``), generated if absent:
    an extxyz file, or with ``lazy`` a conformation store directory.

    Each frame records its SMILES, conformer and the sampler's settings.
    """
    params = _params(spec)
    params["labeller"] = resolve_labeller(params["labeller"])
    if params.get("smiles_file") and params["smiles_file"] != BUNDLED:
        params["smiles_file"] = str(Path(params["smiles_file"]).resolve())
        params["smiles_file_sha256"] = hashlib.sha256(Path(params["smiles_file"]).read_bytes()).hexdigest()
    params["format"] = FORMAT
    params["lazy"] = lazy
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"embedded-{params['labeller']}-{digest}{'' if lazy else '.extxyz'}"
    if path.exists():
        return path
    with exclusive(path):  # every rank of a job may ask at once: one samples, the others wait
        if not path.exists():
            _generate(path, params, lazy)
    return path


def _generate(path: Path, params: dict, lazy: bool) -> None:
    """Sample the set of ``params`` into ``path`` (resumable: :func:`~.shards.sample_beside`)."""
    sampler = Sampler(
        method=params["method"],
        temperature=params["temperature"],
        displacement=params["displacement"],
        conformers=params["conformers"],
        samples=params["samples"],
        labeller=params["labeller"],
        seed=params["seed"],
    )
    molecules = embedded_molecules(params)
    if lazy:
        sample_to_store(path, molecules, sampler, params)
        return
    info = sampler.describe()
    sample_beside(
        path,
        molecules,
        sampler,
        lambda result: write_extxyz(path, [to_atoms(s, info) for s in result.samples]),
    )
