"""read_structures: every supported format and layout into eV and Å, and one-line errors on bad input.

Each test writes its own small file; the expected values come from the arrays written, converted
with ASE's unit constants."""

import ase.db
import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from dens_lightning.data.readers import ReadOptions, read_structures
from dens_lightning.errors import InputError

KCAL_MOL = units.kcal / units.mol  # eV per kcal/mol
XYZ_ATOL = 1e-7  # extxyz writes 8 decimals


def labelled(atoms: Atoms, rng: np.random.Generator, energy: float | None = None) -> Atoms:
    """``atoms`` with a SinglePointCalculator holding a random energy and random forces."""
    energy = float(rng.normal(-100.0, 10.0)) if energy is None else energy
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=rng.normal(size=(len(atoms), 3)))
    return atoms


def molecule(symbols: str, rng: np.random.Generator) -> Atoms:
    return Atoms(symbols, positions=rng.uniform(0.0, 3.0, size=(len(Atoms(symbols)), 3)))


def three_frames(rng: np.random.Generator) -> list[Atoms]:
    """A molecule, a periodic crystal with a cell, and a molecule with two fixed atoms."""
    water = labelled(molecule("H2O", rng), rng)
    silicon = bulk("Si", "diamond", a=5.43)  # primitive fcc cell: 2 atoms, non-orthogonal cell
    silicon.rattle(0.02, seed=1)
    silicon = labelled(silicon, rng)
    methane = molecule("CH4", rng)
    methane.set_constraint(FixAtoms(indices=[0, 3]))
    methane = labelled(methane, rng)
    return [water, silicon, methane]


def check_against(s, frames: list[Atoms], atol: float = 1e-12):
    """``s`` holds exactly ``frames`` (positions, numbers, cells, pbc, labels, fixed atoms)."""
    assert len(s) == len(frames)
    np.testing.assert_array_equal(s.ptr, np.cumsum([0] + [len(a) for a in frames]))
    np.testing.assert_array_equal(s.z, np.concatenate([a.numbers for a in frames]))
    assert s.z.dtype == np.int64 and s.pos.dtype == np.float64
    np.testing.assert_allclose(s.pos, np.concatenate([a.positions for a in frames]), atol=atol, rtol=0)
    np.testing.assert_allclose(s.cell, np.stack([a.cell.array for a in frames]), atol=atol, rtol=0)
    np.testing.assert_array_equal(s.pbc, np.stack([a.pbc for a in frames]))
    np.testing.assert_allclose(s.energy, [a.get_potential_energy() for a in frames], atol=atol, rtol=0)
    # the forces as computed, not zeroed on fixed atoms: the ``fixed`` mask says which to ignore
    raw_forces = np.concatenate([a.get_forces(apply_constraint=False) for a in frames])
    np.testing.assert_allclose(s.forces, raw_forces, atol=atol, rtol=0)
    expected_fixed = np.zeros(len(s.z), dtype=bool)
    for a, start in zip(frames, s.ptr[:-1], strict=True):
        for c in a.constraints:
            expected_fixed[start + np.asarray(c.index)] = True
    np.testing.assert_array_equal(s.fixed, expected_fixed)
    assert s.units == {"energy": "eV", "length": "Å"}


# ---------------------------------------------------------------- ASE formats


def test_extxyz_molecule_crystal_and_fixed_atoms(tmp_path):
    rng = np.random.default_rng(0)
    frames = three_frames(rng)
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames)
    s = read_structures(path)
    check_against(s, frames, atol=XYZ_ATOL)
    assert s.source == str(path)
    # the crystal keeps its cell and periodicity, the molecules have none
    assert s.pbc.tolist() == [[False] * 3, [True] * 3, [False] * 3]
    assert np.abs(s.cell[1]).sum() > 1.0 and not s.cell[0].any()
    # FixAtoms survives the extxyz round trip (as move_mask) and lands on the right global atoms
    assert np.flatnonzero(s.fixed).tolist() == [5 + 0, 5 + 3]


def test_xyz_suffix_reads_like_extxyz(tmp_path):
    rng = np.random.default_rng(1)
    frames = [labelled(molecule("CH3OH", rng), rng) for _ in range(3)]
    path = tmp_path / "frames.xyz"
    ase.io.write(path, frames, format="extxyz")
    check_against(read_structures(path), frames, atol=XYZ_ATOL)


def test_traj(tmp_path):
    frames = three_frames(np.random.default_rng(2))
    path = tmp_path / "frames.traj"
    ase.io.write(path, frames)
    s = read_structures(path)
    check_against(s, frames)  # binary: exact
    assert s.fixed.sum() == 2


def test_ase_db(tmp_path):
    frames = three_frames(np.random.default_rng(3))
    path = tmp_path / "frames.db"
    with ase.db.connect(path) as db:
        for atoms in frames:
            db.write(atoms)
    s = read_structures(path)
    check_against(s, frames)
    assert s.fixed.sum() == 2


def test_ase_frames_without_labels_have_none(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "plain.extxyz"
    ase.io.write(path, [molecule("H2O", rng), molecule("NH3", rng)])
    s = read_structures(path)
    assert len(s) == 2 and s.energy is None and s.forces is None
    assert not s.fixed.any()


def test_extxyz_custom_keys(tmp_path):
    rng = np.random.default_rng(5)
    frames, energies, forces = [], [], []
    for symbols in ("H2O", "CH4"):
        atoms = molecule(symbols, rng)
        energies.append(float(rng.normal(-50.0, 5.0)))
        forces.append(rng.normal(size=(len(atoms), 3)))
        atoms.info["REF_energy"] = energies[-1]
        atoms.arrays["REF_forces"] = forces[-1]
        # decoys under the default names, so picking the wrong key shows
        atoms.info["energy_decoy"] = 123.0
        atoms.arrays["DFT_forces"] = np.full((len(atoms), 3), 7.0)
        frames.append(atoms)
    path = tmp_path / "custom.extxyz"
    ase.io.write(path, frames)

    s = read_structures(path, ReadOptions(energy_key="REF_energy", forces_key="REF_forces"))
    np.testing.assert_allclose(s.energy, energies, atol=XYZ_ATOL, rtol=0)
    np.testing.assert_allclose(s.forces, np.concatenate(forces), atol=XYZ_ATOL, rtol=0)

    other = read_structures(path, ReadOptions(forces_key="DFT_forces"))
    np.testing.assert_allclose(other.forces, 7.0)

    with pytest.raises(InputError, match=r"frame 0: energy key 'U0' not found") as err:
        read_structures(path, ReadOptions(energy_key="U0"))
    assert str(path) in str(err.value)
    with pytest.raises(InputError, match=r"frame 0: forces key 'grad' not found") as err:
        read_structures(path, ReadOptions(forces_key="grad"))
    assert str(path) in str(err.value)


def test_ase_units_override(tmp_path):
    rng = np.random.default_rng(6)
    frames = [labelled(molecule("H2O", rng), rng)]
    path = tmp_path / "kcal.extxyz"
    ase.io.write(path, frames)
    s = read_structures(path, ReadOptions(units="kcal/mol"))
    np.testing.assert_allclose(s.energy, frames[0].get_potential_energy() * KCAL_MOL, rtol=1e-12)
    np.testing.assert_allclose(s.forces, frames[0].get_forces() * KCAL_MOL, rtol=0, atol=XYZ_ATOL)
    np.testing.assert_allclose(s.pos, frames[0].positions, atol=XYZ_ATOL, rtol=0)
    assert s.units == {"energy": "kcal/mol", "length": "Å"}


# ---------------------------------------------------------------- npz


def test_npz_sgdml_layout_in_kcal_mol(tmp_path):
    rng = np.random.default_rng(7)
    n_frames, z = 4, np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
    R = rng.uniform(0, 3, size=(n_frames, len(z), 3))
    E = rng.normal(-97000.0, 5.0, size=(n_frames, 1))  # sGDML stores E as [frames, 1]
    F = rng.normal(0, 30.0, size=(n_frames, len(z), 3))
    path = tmp_path / "ethanol.npz"
    np.savez(path, R=R, z=z, E=E, F=F, name=np.array("ethanol"), theory=np.array("DFT"))

    s = read_structures(path)
    assert len(s) == n_frames
    np.testing.assert_array_equal(s.ptr, np.arange(n_frames + 1) * len(z))
    np.testing.assert_array_equal(s.z, np.tile(z, n_frames))
    np.testing.assert_allclose(s.pos, R.reshape(-1, 3), rtol=1e-15)
    assert s.energy.shape == (n_frames,)
    np.testing.assert_allclose(s.energy, E[:, 0] * KCAL_MOL, rtol=1e-12)
    np.testing.assert_allclose(s.forces, F.reshape(-1, 3) * KCAL_MOL, rtol=1e-12)
    assert s.units == {"energy": "kcal/mol", "length": "Å"}
    assert not s.pbc.any() and not s.cell.any()
    # the conversion is the real one: 1 kcal/mol is about 43.4 meV
    assert s.energy[0] == pytest.approx(E[0, 0] * 0.0433641, rel=1e-5)


def test_npz_rmd17_layout_in_kcal_mol(tmp_path):
    rng = np.random.default_rng(8)
    z = np.array([8, 1, 1])
    coords = rng.uniform(0, 2, size=(3, 3, 3))
    energies = rng.normal(-48000.0, 2.0, size=3)
    forces = rng.normal(0, 20.0, size=(3, 3, 3))
    path = tmp_path / "rmd17_water.npz"
    np.savez(
        path,
        nuclear_charges=z,
        coords=coords,
        energies=energies,
        forces=forces,
        old_indices=np.arange(3),
    )
    s = read_structures(path)
    np.testing.assert_array_equal(s.z, np.tile(z, 3))
    np.testing.assert_allclose(s.pos, coords.reshape(-1, 3), rtol=1e-15)
    np.testing.assert_allclose(s.energy, energies * KCAL_MOL, rtol=1e-12)
    np.testing.assert_allclose(s.forces, forces.reshape(-1, 3) * KCAL_MOL, rtol=1e-12)
    assert s.units == {"energy": "kcal/mol", "length": "Å"}


def test_npz_custom_layout_through_key_mapping(tmp_path):
    rng = np.random.default_rng(9)
    Z = np.array([7, 1, 1, 1])
    xyz = rng.uniform(0, 2, size=(2, 4, 3))
    U = rng.normal(-1500.0, 1.0, size=2)
    G = rng.normal(size=(2, 4, 3))
    path = tmp_path / "custom.npz"
    np.savez(path, Z=Z, xyz=xyz, U=U, G=G)
    options = ReadOptions(
        keys={"numbers": "Z", "positions": "xyz"}, energy_key="U", forces_key="G", units="eV"
    )
    s = read_structures(path, options)
    np.testing.assert_array_equal(s.z, np.tile(Z, 2))
    np.testing.assert_allclose(s.pos, xyz.reshape(-1, 3), rtol=1e-15)
    np.testing.assert_allclose(s.energy, U, rtol=1e-15)
    np.testing.assert_allclose(s.forces, G.reshape(-1, 3), rtol=1e-15)
    assert s.units == {"energy": "eV", "length": "Å"}

    # without the mapping the file cannot be understood, and the error says how to fix it
    with pytest.raises(
        InputError, match=r"no numbers array \(keys: G, U, Z, xyz\).*data\.keys\.numbers"
    ) as err:
        read_structures(path)
    assert str(path) in str(err.value)

    # mapping only the structure keys: no labels
    bare = read_structures(path, ReadOptions(keys={"numbers": "Z", "positions": "xyz"}))
    assert bare.energy is None and bare.forces is None


def test_npz_single_frame_2d_positions(tmp_path):
    path = tmp_path / "one.npz"
    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]])
    np.savez(path, numbers=np.array([1, 1]), positions=pos, energy=np.array(-31.7))
    s = read_structures(path)
    assert len(s) == 1 and s.ptr.tolist() == [0, 2]
    np.testing.assert_allclose(s.pos, pos)
    np.testing.assert_allclose(s.energy, [-31.7])
    assert s.units == {"energy": "eV", "length": "Å"}  # the ase-like npz layout is in eV


def test_npz_hartree_bohr_units_override(tmp_path):
    rng = np.random.default_rng(10)
    z = np.array([8, 1, 1])
    R = rng.uniform(0, 3, size=(2, 3, 3))  # Bohr
    E = rng.normal(-76.0, 0.1, size=(2, 1))  # Hartree
    F = rng.normal(0, 0.05, size=(2, 3, 3))  # Hartree/Bohr
    path = tmp_path / "atomic_units.npz"
    np.savez(path, R=R, z=z, E=E, F=F)
    s = read_structures(path, ReadOptions(units="Hartree, Bohr"))
    np.testing.assert_allclose(s.pos, R.reshape(-1, 3) * units.Bohr, rtol=1e-12)
    np.testing.assert_allclose(s.energy, E[:, 0] * units.Hartree, rtol=1e-12)
    np.testing.assert_allclose(s.forces, F.reshape(-1, 3) * units.Hartree / units.Bohr, rtol=1e-12)
    assert s.units == {"energy": "Hartree", "length": "Bohr"}
    assert s.cell.shape == (2, 3, 3) and not s.cell.any()

    # an energy unit alone keeps Å; the layout's kcal/mol default is replaced
    t = read_structures(path, ReadOptions(units="Hartree"))
    np.testing.assert_allclose(t.pos, R.reshape(-1, 3), rtol=1e-15)
    np.testing.assert_allclose(t.forces, F.reshape(-1, 3) * units.Hartree, rtol=1e-12)
    assert t.units == {"energy": "Hartree", "length": "Å"}


# ---------------------------------------------------------------- HDF5


def test_hdf5_ani1x_layout(tmp_path):
    rng = np.random.default_rng(11)
    path = tmp_path / "ani1x.h5"
    groups = {"C1H4": (np.array([6, 1, 1, 1, 1]), 3), "H2O1": (np.array([1, 1, 8]), 2)}
    written = {}
    with h5py.File(path, "w") as f:
        for name, (numbers, k) in groups.items():
            g = f.create_group(name)
            coords = rng.uniform(0, 2, size=(k, len(numbers), 3))
            energy = rng.normal(-40.0, 0.1, size=k)
            forces = rng.normal(0, 0.05, size=(k, len(numbers), 3))
            g["atomic_numbers"] = numbers
            g["coordinates"] = coords
            g["wb97x_dz.energy"] = energy
            g["wb97x_dz.forces"] = forces
            g["ccsd(t)_cbs.energy"] = energy + 1.0  # another level of theory, not the one read
            written[len(numbers)] = (numbers, coords, energy, forces)

    s = read_structures(path)
    assert len(s) == 5 and s.units == {"energy": "Hartree", "length": "Å"}
    assert sorted(s.num_atoms.tolist()) == [3, 3, 5, 5, 5]
    for n_atoms, (numbers, coords, energy, forces) in written.items():
        frames = np.flatnonzero(s.num_atoms == n_atoms)
        atoms = np.concatenate([np.arange(s.ptr[i], s.ptr[i + 1]) for i in frames])
        np.testing.assert_array_equal(s.z[atoms], np.tile(numbers, len(frames)))
        np.testing.assert_allclose(s.pos[atoms], coords.reshape(-1, 3), rtol=1e-15)  # Å stays Å
        np.testing.assert_allclose(s.energy[frames], energy * units.Hartree, rtol=1e-12)
        np.testing.assert_allclose(s.forces[atoms], forces.reshape(-1, 3) * units.Hartree, rtol=1e-12)
    assert s.source == str(path)


def test_hdf5_spice_layout(tmp_path):
    rng = np.random.default_rng(12)
    path = tmp_path / "spice.hdf5"
    numbers = np.array([6, 8, 1, 1])
    conformations = rng.uniform(0, 4, size=(3, 4, 3))  # Bohr
    energy = rng.normal(-114.0, 0.01, size=3)  # Hartree
    gradient = rng.normal(0, 0.02, size=(3, 4, 3))  # Hartree/Bohr
    with h5py.File(path, "w") as f:
        g = f.create_group("formaldehyde")
        g["atomic_numbers"] = numbers
        g["conformations"] = conformations
        g["dft_total_energy"] = energy
        g["dft_total_gradient"] = gradient
        g["smiles"] = np.array([b"[H:3][C:1](=[O:2])[H:4]"])
        g["subset"] = np.array([b"PubChem"])

    s = read_structures(path)
    assert len(s) == 3
    np.testing.assert_array_equal(s.z, np.tile(numbers, 3))
    np.testing.assert_allclose(s.pos, conformations.reshape(-1, 3) * units.Bohr, rtol=1e-12)
    np.testing.assert_allclose(s.energy, energy * units.Hartree, rtol=1e-12)
    # forces are minus the gradient
    np.testing.assert_allclose(s.forces, -gradient.reshape(-1, 3) * units.Hartree / units.Bohr, rtol=1e-12)
    assert s.units == {"energy": "Hartree", "length": "Bohr"}


def test_hdf5_without_known_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data/xyz"] = np.zeros((1, 2, 3))
    with pytest.raises(InputError, match=r"no group with 'atomic_numbers'") as err:
        read_structures(path)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- bad input


def raises_naming(path, pattern, options=None) -> str:
    with pytest.raises(InputError, match=pattern) as err:
        read_structures(path, options)
    message = str(err.value)
    assert str(path) in message
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    raises_naming(tmp_path / "absent.extxyz", "file not found")


def test_directory(tmp_path):
    (tmp_path / "dir.xyz").mkdir()
    raises_naming(tmp_path / "dir.xyz", "is a directory")


def test_unknown_extension(tmp_path):
    path = tmp_path / "frames.foo"
    path.write_text("3\n\nH 0 0 0\n")
    message = raises_naming(path, r"unknown extension '\.foo'")
    assert ".extxyz" in message and ".npz" in message and ".h5" in message


@pytest.mark.parametrize("name", ["empty.extxyz", "empty.npz", "empty.h5", "empty.traj"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    raises_naming(path, "file is empty")


@pytest.mark.parametrize(
    "text",
    [
        "3\nProperties=species:S:1:pos:R:3\nH 0.0 0.0 0.0\n",  # truncated: 1 of 3 atoms
        "not a header\nH 0 0 0\n",  # garbage
        "2\nProperties=species:S:1:pos:R:3\nH 0.0 0.0\nH 1.0 1.0 1.0\n",  # a column missing
    ],
)
def test_malformed_extxyz(tmp_path, text):
    path = tmp_path / "bad.extxyz"
    path.write_text(text)
    raises_naming(path, r"frame 0: cannot read")


def test_garbage_npz_and_h5(tmp_path):
    for name in ("bad.npz", "bad.h5"):
        path = tmp_path / name
        path.write_bytes(b"this is not a binary container\n" * 4)
        raises_naming(path, "cannot read as")


def nan_frames(rng, field: str) -> list[Atoms]:
    frames = [labelled(molecule("H2O", rng), rng) for _ in range(4)]
    bad = frames[2]
    if field == "positions":
        pos = bad.positions.copy()
        pos[1, 2] = np.nan
        bad.positions = pos
        labelled(bad, rng)
    elif field == "energy":
        labelled(bad, rng, energy=float("nan"))
    else:
        forces = bad.get_forces().copy()
        forces[0, 0] = np.nan
        bad.calc = SinglePointCalculator(bad, energy=-1.0, forces=forces)
    return frames


@pytest.mark.parametrize("suffix", [".extxyz", ".traj"])
@pytest.mark.parametrize("field", ["positions", "energy", "forces"])
def test_nan_names_field_and_frame(tmp_path, field, suffix):
    path = tmp_path / f"nan{suffix}"
    ase.io.write(path, nan_frames(np.random.default_rng(13), field))
    raises_naming(path, rf"frame 2: non-finite {field}")


@pytest.mark.parametrize("field", ["R", "E", "F"])
def test_nan_in_npz_names_frame(tmp_path, field):
    rng = np.random.default_rng(14)
    arrays = {
        "z": np.array([8, 1, 1]),
        "R": rng.uniform(size=(5, 3, 3)),
        "E": rng.normal(size=(5, 1)),
        "F": rng.normal(size=(5, 3, 3)),
    }
    arrays[field][3] = np.inf if field == "E" else np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    name = {"R": "positions", "E": "energy", "F": "forces"}[field]
    raises_naming(path, rf"frame 3: non-finite {name}")


def test_npz_without_positions(tmp_path):
    path = tmp_path / "nopos.npz"
    np.savez(path, Z=np.array([1, 1]), E=np.zeros(3))
    raises_naming(
        path, r"no positions array \(keys: E, Z\).*data\.keys\.positions", ReadOptions(keys={"numbers": "Z"})
    )


def test_npz_missing_label_keys(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((2, 2, 3)))
    raises_naming(path, r"energy key 'U' not found \(keys: R, z\)", ReadOptions(energy_key="U"))
    raises_naming(path, r"forces key 'G' not found", ReadOptions(forces_key="G"))


def test_npz_forces_of_wrong_shape(tmp_path):
    path = tmp_path / "shape.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((4, 2, 3)), E=np.zeros(4), F=np.zeros((4, 3, 3)))
    raises_naming(path, r"forces have shape \(4, 3, 3\), expected \(4, 2, 3\)")


def test_npz_other_wrong_shapes(tmp_path):
    path = tmp_path / "energies.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((4, 2, 3)), E=np.zeros(3))
    raises_naming(path, "energies have 3 values for 4 frames")
    path = tmp_path / "numbers.npz"
    np.savez(path, z=np.array([1, 1, 1]), R=np.zeros((4, 2, 3)))
    raises_naming(path, r"atomic numbers have shape \(3,\), expected \(2,\)")
    path = tmp_path / "positions.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((4, 2, 2)))
    raises_naming(path, r"positions 'R' have shape \(4, 2, 2\)")


def test_npz_per_frame_numbers(tmp_path):
    path = tmp_path / "per_frame.npz"
    z = np.array([[8, 1, 1], [8, 1, 1]])
    np.savez(path, z=z, R=np.ones((2, 3, 3)))
    assert read_structures(path).z.tolist() == [8, 1, 1, 8, 1, 1]
    # differing rows describe different molecules: not one layout to tile
    np.savez(path, z=np.array([[8, 1, 1], [7, 1, 1]]), R=np.ones((2, 3, 3)))
    raises_naming(path, "atomic numbers differ between frames")


def test_extxyz_forces_of_wrong_shape(tmp_path):
    atoms = Atoms("H2O", positions=np.eye(3))
    atoms.arrays["REF_forces"] = np.zeros((3, 2))
    path = tmp_path / "shape.extxyz"
    ase.io.write(path, atoms)
    raises_naming(
        path,
        r"frame 0: forces 'REF_forces' have shape \(3, 2\), expected \(3, 3\)",
        ReadOptions(forces_key="REF_forces"),
    )


@pytest.mark.parametrize("spec", ["furlongs", "eV, parsec", "eV, Å, s", "hartree"])
def test_invalid_units(tmp_path, spec):
    path = tmp_path / "ok.npz"
    np.savez(path, z=np.array([1, 1]), R=np.zeros((1, 2, 3)))
    with pytest.raises(InputError, match=r"data\.units: .* is not a unit") as err:
        read_structures(path, ReadOptions(units=spec))
    message = str(err.value)
    assert repr(spec) in message
    assert "kcal/mol" in message and "Bohr" in message  # says what is accepted


# ---------------------------------------------------------------- truncation and units


def test_truncated_extxyz_names_the_frame(tmp_path):
    """A file cut in the middle of its fourth frame: the error names that frame and the file."""
    rng = np.random.default_rng(5)
    path = tmp_path / "cut.extxyz"
    ase.io.write(path, [labelled(molecule("CH4", rng), rng) for _ in range(6)])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 3 * 7 + 4]))  # 7 lines per frame: 3 frames, then a header and 2 atoms
    raises_naming(path, r"frame 3: cannot read .*truncated.*\(3 frames read before it\)")


def water_in(unit_factor: float, declared_energy: float) -> list[Atoms]:
    """Water frames with a total energy of ``declared_energy`` eV, written as number / ``unit_factor``."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(4):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        atoms.rattle(0.01, seed=k)
        energy = (declared_energy + rng.normal(0, 0.01)) / unit_factor
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((3, 3)))
        frames.append(atoms)
    return frames


@pytest.mark.parametrize(
    "written_in, declared, likely",
    [(KCAL_MOL, "auto", "kcal/mol"), (1.0, "Hartree", "eV"), (1e-3, "auto", "meV")],
)
def test_energies_in_another_unit_are_warned_about_naming_the_likely_unit(
    tmp_path, written_in, declared, likely
):
    """Water's total energy, -2079 eV, written in another unit than the one the file is read in: a
    warning names the file and the unit the numbers look like."""
    path = tmp_path / "water.extxyz"
    ase.io.write(path, water_in(written_in, -76.4 * units.Hartree))
    with pytest.warns(UserWarning, match=rf"{path}: read as .*they look like {likely}"):
        read_structures(path, ReadOptions(units=declared))


@pytest.mark.parametrize("energy", [-76.4 * units.Hartree, -9.5, 0.3])
def test_total_and_relative_energies_in_the_declared_unit_pass_quietly(tmp_path, energy, recwarn):
    path = tmp_path / "water.extxyz"
    ase.io.write(path, water_in(1.0, energy))
    read_structures(path)
    assert not [w for w in recwarn if "look like" in str(w.message)]
