"""The embedded labelled default data set: made on first use, cached in the user's cache directory."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from .sampling import conformers, label_mmff, label_xtb, perturb, resolve_labeller

FORMAT = 1  # bump when the generator changes, so old caches are not reused


def cache_dir() -> Path:
    """The cache: ``$DENS_LIGHTNING_CACHE``, else ``$XDG_CACHE_HOME/dens_lightning``, else
    ``~/.cache/dens_lightning``."""
    if os.environ.get("DENS_LIGHTNING_CACHE"):
        return Path(os.environ["DENS_LIGHTNING_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dens_lightning"


def embedded_dataset(spec) -> Path:
    """Path of the extxyz file for ``spec`` (an ``EmbeddedDataConfig``), generating it if absent.

    Each frame records its ``smiles`` and ``labeller`` in its info line.
    """
    if is_dataclass(spec):
        params = asdict(spec)
    else:
        from omegaconf import OmegaConf

        params = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    params["labeller"] = resolve_labeller(params["labeller"])
    params["format"] = FORMAT
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / f"embedded-{params['labeller']}-{digest}.extxyz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        frames = generate(params)
        tmp = path.with_suffix(f".tmp{os.getpid()}.extxyz")
        import ase.io

        ase.io.write(tmp, frames, format="extxyz")
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return path


def generate(params: dict) -> list:
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(params["seed"])
    frames = []
    for k, smiles in enumerate(params["smiles"]):
        mol, numbers, minima = conformers(smiles, params["conformers"], params["seed"] + k)
        for minimum in minima:
            for _ in range(params["samples"]):
                positions = perturb(minimum, params["displacement"], rng)
                if params["labeller"] == "xtb":
                    label = label_xtb(numbers, positions)
                    if label is None:
                        continue
                else:
                    label = label_mmff(mol, positions)
                atoms = Atoms(numbers=numbers, positions=positions)
                atoms.info.update(smiles=smiles, labeller=params["labeller"])
                atoms.calc = SinglePointCalculator(atoms, energy=label[0], forces=label[1])
                frames.append(atoms)
    return frames
