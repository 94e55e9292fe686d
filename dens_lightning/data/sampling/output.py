"""Samples as ``ase.Atoms`` frames, written to extxyz."""

from __future__ import annotations

from pathlib import Path

from .sampler import Sample


def to_atoms(sample: Sample, info: dict):
    """An ``ase.Atoms`` frame with the SMILES, conformer and sampler settings in its info."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=sample.numbers, positions=sample.positions)
    atoms.info.update(smiles=sample.smiles, conformer=sample.conformer, **info)
    if sample.energy is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=sample.energy, forces=sample.forces)
    return atoms


def write_extxyz(path: str | Path, frames: list) -> Path:
    """Write ``frames`` to ``path`` atomically (a temporary file, then a rename): a concurrent reader
    never sees half a file."""
    import ase.io

    from ...files import replacing

    with replacing(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return Path(path)
