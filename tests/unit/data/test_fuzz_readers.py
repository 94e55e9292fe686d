"""Property-based fuzzing of the readers: random bytes, truncated and corrupted files of every
supported format end in a correct read or one clear :class:`InputError` that names the file, never
another exception or a hang (each read has a time limit)."""

import contextlib
import os
import signal
from pathlib import Path

import ase.db
import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dens_lightning.data.readers import read_structures
from dens_lightning.errors import InputError

SECONDS_PER_READ = 10
FUZZ = settings(
    max_examples=int(os.environ.get("DENS_FUZZ_EXAMPLES", 100)),
    deadline=None,  # the alarm below bounds each read instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run: a failure reproduces
)


def frames() -> list[Atoms]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(3):
        atoms = Atoms(
            "CH4",
            positions=[[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.5, 0.9], [-0.4, -0.5, -0.9]],
        )
        atoms.rattle(0.02, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=-1100.0 + k, forces=rng.normal(size=(5, 3)))
        out.append(atoms)
    return out


def write_valid(directory: Path, suffix: str) -> bytes:
    """A small valid file of ``suffix`` (3 methane frames with energies and forces), as bytes."""
    path = directory / f"valid{suffix}"
    if suffix in (".xyz", ".extxyz", ".traj"):
        ase.io.write(path, frames())
    elif suffix == ".db":
        with ase.db.connect(path) as db:
            for atoms in frames():
                db.write(atoms)
    elif suffix == ".npz":
        fs = frames()
        np.savez(
            path,
            numbers=fs[0].numbers,
            positions=np.stack([a.positions for a in fs]),
            energy=np.array([a.get_potential_energy() for a in fs]),
            forces=np.stack([a.get_forces() for a in fs]),
        )
    else:  # ANI-1x-like HDF5 layout
        fs = frames()
        with h5py.File(path, "w") as handle:
            group = handle.create_group("CH4")
            group["atomic_numbers"] = fs[0].numbers
            group["coordinates"] = np.stack([a.positions for a in fs])
            group["wb97x_dz.energy"] = np.array([a.get_potential_energy() for a in fs]) / 27.211386
            group["wb97x_dz.forces"] = np.stack([a.get_forces() for a in fs]) / 27.211386
    data = path.read_bytes()
    path.unlink()
    return data


class ReadTookTooLong(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int):
    def alarm(signum, frame):
        raise ReadTookTooLong(f"a read took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_or_error(path: Path):
    """``read_structures(path)`` within the time limit, or None after an InputError of one line that
    names ``path``."""
    try:
        with time_limit(SECONDS_PER_READ):
            return read_structures(path)
    except InputError as err:
        message = str(err)
        assert str(path) in message and "\n" not in message, message
        return None


def read_or_refuse(directory: Path, suffix: str, data: bytes) -> None:
    """Write ``data`` as a file of ``suffix`` and read it: a read gives finite, consistent arrays; a
    refusal is an InputError of one line that names the file."""
    path = directory / f"case{suffix}"
    path.write_bytes(data)
    try:
        structures = read_or_error(path)
    finally:
        for leftover in directory.glob("case*"):  # the file and any journal its reader left
            leftover.unlink()
    if structures is None:
        return
    assert len(structures) >= 1
    assert structures.ptr[-1] == len(structures.z) == len(structures.pos)
    assert np.isfinite(structures.pos).all()
    if structures.energy is not None:
        assert np.isfinite(structures.energy).all() and len(structures.energy) == len(structures)
    if structures.forces is not None:
        assert structures.forces.shape == structures.pos.shape and np.isfinite(structures.forces).all()


SUFFIXES = [".extxyz", ".xyz", ".traj", ".db", ".npz", ".h5"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(data=st.binary(min_size=1, max_size=600))
def test_random_bytes(tmp_path, suffix, data):
    read_or_refuse(tmp_path, suffix, data)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files(tmp_path, suffix, cut):
    valid = write_valid(tmp_path, suffix)
    read_or_refuse(tmp_path, suffix, valid[: max(1, int(cut * len(valid)))])


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=4,
    )
)
def test_corrupted_files(tmp_path, suffix, edits):
    data = bytearray(write_valid(tmp_path, suffix))
    for where, replacement in edits:
        start = int(where * len(data))
        data[start : start + len(replacement)] = replacement
    read_or_refuse(tmp_path, suffix, bytes(data))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_the_valid_files_read(tmp_path, suffix):
    """The files the fuzzers start from are read whole (so the cases above are near real files)."""
    path = tmp_path / f"whole{suffix}"
    path.write_bytes(write_valid(tmp_path, suffix))
    structures = read_structures(path)
    assert len(structures) == 3 and structures.forces is not None


# ---------------------------------------------------------------- conformation stores (directories)

STORE_FILES = ["info.json", "numbers.npy", "positions.npy", "ptr.npy", "energy.npy", "forces.npy"]


def write_valid_store(directory: Path) -> Path:
    """A store as ``sample --out DIR`` writes it: 3 methane frames with labels."""
    from dens_lightning.data.sampling import Sample
    from dens_lightning.data.store import write_store

    samples = [
        Sample(a.numbers, a.positions, "C", 0, a.get_potential_energy(), a.get_forces()) for a in frames()
    ]
    return write_store(directory / "store", samples, {"sampler": "test"})


def check_store(store: Path) -> None:
    """Opened, a store's arrays fit together; refused, the error names a file of the store. (Its
    values are not read when it is opened: they were checked when sampled.)"""
    structures = read_or_error(store)
    if structures is None:
        return
    assert structures.ptr[0] == 0 and structures.ptr[-1] == len(structures.z) == len(structures.pos)
    assert structures.pos.shape == (len(structures.z), 3) and structures.z.min() >= 1


@FUZZ
@given(
    name=st.sampled_from(STORE_FILES),
    kind=st.sampled_from(["truncate", "corrupt", "random", "remove"]),
    where=st.floats(0.0, 1.0, exclude_max=True),
    data=st.binary(min_size=1, max_size=64),
)
def test_damaged_stores(tmp_path, name, kind, where, data):
    import shutil

    shutil.rmtree(tmp_path / "store", ignore_errors=True)
    store = write_valid_store(tmp_path)
    file = store / name
    content = bytearray(file.read_bytes())
    at = int(where * len(content))
    if kind == "truncate":
        file.write_bytes(bytes(content[:at]))
    elif kind == "corrupt":
        content[at : at + len(data)] = data
        file.write_bytes(bytes(content))
    elif kind == "random":
        file.write_bytes(data)
    else:
        file.unlink()
    check_store(store)


def test_the_valid_store_reads(tmp_path):
    structures = read_structures(write_valid_store(tmp_path))
    assert len(structures) == 3 and structures.forces is not None
