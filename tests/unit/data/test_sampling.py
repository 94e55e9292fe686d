"""The sampler: RDKit conformers, non-equilibrium samples that keep their bonds, labels, the `sample`
command and the conformation store."""

import importlib.util

import ase.io
import numpy as np
import pytest

from dens_lightning.artifacts import read_metadata
from dens_lightning.cli import main
from dens_lightning.data.readers import read_structures
from dens_lightning.data.sampling import (
    Sampler,
    bond_graph,
    conformers,
    label_mmff,
    label_xtb,
    mmff_energy_gradient,
    mmff_field,
    mmff_hessian,
    normal_mode_sample,
    normal_modes,
    perturb,
    read_molecules,
    read_smiles_file,
)
from dens_lightning.data.store import open_store, store_info, write_store
from dens_lightning.errors import InputError

LABELLERS = ["mmff"] + (["xtb"] if importlib.util.find_spec("tblite") else [])


@pytest.mark.parametrize("labeller", LABELLERS)
def test_label_forces_are_minus_the_energy_gradient(labeller):
    mol, numbers, minima = conformers("CCO", 1, seed=1)
    positions = perturb(minima[0], 0.03, np.random.default_rng(0))

    def label(p):
        return label_mmff(mol, p) if labeller == "mmff" else label_xtb(numbers, p)

    _, forces = label(positions)
    h = 1e-4
    for atom, axis in [(0, 0), (2, 1), (5, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = -(label(plus)[0] - label(minus)[0]) / (2 * h)
        assert forces[atom, axis] == pytest.approx(numeric, rel=1e-3, abs=1e-3)


def test_conformers_are_seeded_and_hydrogenated():
    _, numbers, first = conformers("CC(=O)O", 2, seed=5)
    _, _, second = conformers("CC(=O)O", 2, seed=5)
    assert sorted(numbers.tolist()) == [1, 1, 1, 1, 6, 6, 8, 8]
    np.testing.assert_allclose(first[0], second[0])


def test_bad_smiles_is_named():
    with pytest.raises(InputError, match="C1CC"):
        conformers("C1CC", 1, seed=0)


def test_mmff_hessian_matches_second_differences_of_the_energy():
    mol, _, minima = conformers("CC(=O)Nc1ccccc1", 1, seed=3)
    field, x = mmff_field(mol), minima[0]
    hessian = mmff_hessian(field, x)
    energy0 = mmff_energy_gradient(field, x)[0]
    h = 1e-3
    for k in (0, 7, 40):
        step = np.zeros(x.size)
        step[k] = h
        plus = mmff_energy_gradient(field, x + step.reshape(x.shape))[0]
        minus = mmff_energy_gradient(field, x - step.reshape(x.shape))[0]
        assert hessian[k, k] == pytest.approx((plus + minus - 2 * energy0) / h**2, rel=1e-3)


def test_normal_mode_samples_have_the_harmonic_energy_at_low_temperature():
    """At 1 K the displacements are tiny, so the MMFF94 energy rise must equal the harmonic
    energy (3/2) N k_B T Σc of ANI-1 sampling: checks the Hessian, the modes and the amplitudes."""
    mol, numbers, minima = conformers("CC(=O)Nc1ccccc1", 1, seed=3)
    field, x0 = mmff_field(mol), minima[0]
    constants, modes = normal_modes(field, x0)
    assert len(constants) == 3 * len(numbers) - 6
    assert constants.min() > 0  # a true minimum: no imaginary modes
    rng = np.random.default_rng(0)
    rises = [
        mmff_energy_gradient(field, normal_mode_sample(x0, constants, modes, 1.0, rng))[0] for _ in range(200)
    ]
    rise = np.mean(rises) - mmff_energy_gradient(field, x0)[0]
    expected = 1.5 * len(numbers) * 0.0019872 * 1.0 * 0.5  # kcal/mol; E[Σc] = 1/2
    assert rise == pytest.approx(expected, rel=0.15)


def aligned_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD after optimal superposition (Kabsch)."""
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1, 1, d]) @ vt
    return float(np.sqrt(((a @ rotation - b) ** 2).sum(1).mean()))


def sample_statistics(method: str, temperature: float) -> tuple[float, float, float]:
    """Mean aligned RMSD from the minimum (Å), mean MMFF94 force RMS of samples and of the minimum
    (kcal/mol/Å), for acetanilide; asserts every sample keeps its bonds."""
    molecule = read_molecules(["CC(=O)Nc1ccccc1"])
    sampler = Sampler(method=method, temperature=temperature, conformers=1, samples=16, seed=2)
    samples = list(sampler.sample(molecule))
    assert len(samples) == 16
    seed = int(np.random.default_rng([2, 0]).integers(2**31))  # the sampler's conformer seed
    mol, numbers, minima = conformers(molecule[0].mol, 1, seed)
    field, minimum = mmff_field(mol), minima[0]
    reference = bond_graph(numbers, minimum)
    rmsd, forces = [], []
    for sample in samples:
        np.testing.assert_allclose(sample.numbers, numbers)
        assert np.array_equal(bond_graph(numbers, sample.positions), reference)
        rmsd.append(aligned_rmsd(sample.positions, minimum))
        forces.append(np.sqrt((mmff_energy_gradient(field, sample.positions)[1] ** 2).sum(1).mean()))
    at_minimum = np.sqrt((mmff_energy_gradient(field, minimum)[1] ** 2).sum(1).mean())
    return float(np.mean(rmsd)), float(np.mean(forces)), float(at_minimum)


@pytest.mark.parametrize("method", ["normal-mode", "md"])
def test_samples_are_not_minima_and_spread_grows_with_temperature(method):
    rmsd = {}
    for temperature in (300.0, 1000.0):
        rmsd[temperature], force, at_minimum = sample_statistics(method, temperature)
        assert at_minimum < 0.05  # kcal/mol/Å: the conformer was minimised
        assert force > 5.0  # well above zero: thermal-scale forces
    assert rmsd[300.0] > 0.05
    assert rmsd[1000.0] > 1.3 * rmsd[300.0]


def test_perturbation_that_breaks_bonds_is_rejected_and_counted():
    sampler = Sampler(method="perturb", displacement=0.2, samples=20, seed=0)
    samples = list(sampler.sample(read_molecules(["CCO"])))
    assert sampler.report.rejected_bonds > 0
    assert sampler.report.kept == len(samples) == 20
    reference = bond_graph(samples[0].numbers, conformers("CCO", 1, 0)[2][0])
    assert all(np.array_equal(bond_graph(s.numbers, s.positions), reference) for s in samples)


def test_molecules_from_smiles_file_and_sdf(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    smi = tmp_path / "m.smi"
    smi.write_text("# comment\nCCO ethanol\n\nCC#N acetonitrile\n")
    assert read_smiles_file(smi) == ["CCO", "CC#N"]
    mol = Chem.AddHs(Chem.MolFromSmiles("OCC=O"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    with Chem.SDWriter(str(tmp_path / "m.sdf")) as writer:
        writer.write(mol)
    molecules = read_molecules(smiles=["C"], smiles_file=smi, sdf=tmp_path / "m.sdf")
    assert [m.smiles for m in molecules] == ["C", "CCO", "CC#N", "O=CCO"]
    assert molecules[-1].mol.GetNumAtoms() == 8


def test_bundled_list_excludes_the_finetune_and_benchmark_molecules():
    from rdkit import Chem

    def canonical(s):
        return Chem.MolToSmiles(Chem.MolFromSmiles(s))

    bundled = {canonical(s) for s in read_smiles_file("bundled")}
    assert len(bundled) >= 300
    for excluded in ("CCO", "CC(=O)O", "c1ccccc1O", "NCC(=O)O", "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1"):
        assert canonical(excluded) not in bundled


def test_sample_command_writes_extxyz_with_provenance(tmp_path, capsys):
    out = tmp_path / "s.xyz"
    argv = ["sample", "--smiles", "CCO", "CC#N", "--num", "5", "--out", str(out), "--label", "mmff"]
    assert main([*argv, "--method", "normal-mode", "--temperature", "400", "--conformers", "2"]) == 0
    assert "rejected" in capsys.readouterr().out
    frames = ase.io.read(out, ":")
    assert len(frames) == 10
    assert {f.info["smiles"] for f in frames} == {"CCO", "CC#N"}
    assert all(f.info["method"] == "normal-mode" and f.info["temperature"] == 400.0 for f in frames)
    assert frames[0].get_forces().shape == (9, 3)
    assert main(["sample", "--smiles", "CCO", "--num", "3", "--out", str(out), "--method", "perturb"]) == 0
    frames = ase.io.read(out, ":")
    assert frames[0].info["displacement"] == 0.05 and frames[0].calc is None


@pytest.mark.slow
def test_sample_command_writes_a_store_that_pretraining_reads_lazily(tmp_path, capsys):
    store = tmp_path / "conformations"  # no extension: a memory-mapped store
    argv = ["sample", "--smiles", "CCO", "CC#N", "--num", "12", "--out", str(store), "--method", "perturb"]
    assert main(argv) == 0
    assert store_info(store)["structures"] == 24 and store_info(store)["smiles"] == ["CCO", "CC#N"]
    structures = read_structures(store)
    assert isinstance(structures.pos, np.memmap) and len(structures) == 24
    run = tmp_path / "run"
    overrides = [f"data.path={store}", "data.split=[20,4,0]", "data.batch_size=4", "trainer.max_steps=2"]
    assert main(["pretrain", "--run-dir", str(run), "--no-progress", *overrides]) == 0
    # the data module took the memory-mapped path (views, never a copy) and recorded the store
    assert read_metadata(run / "model.safetensors")["data"]["store"] == str(store)
    capsys.readouterr()
    assert main(["pretrain", "--run-dir", str(tmp_path / "bad"), f"data.path={tmp_path}"]) == 2
    assert "not a conformation store" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--smiles", "C1CC", "--num", "2"], "C1CC"),
        (["--num", "2"], "no molecules"),
        (["--smiles", "C", "--num", "0"], "--num"),
        (["--smiles-file", "missing.smi", "--num", "2"], "missing.smi"),
    ],
)
def test_sample_command_refuses_bad_input(tmp_path, capsys, argv, message):
    assert main(["sample", *argv, "--out", str(tmp_path / "x.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_store_round_trip_is_memory_mapped(tmp_path):
    sampler = Sampler(method="perturb", samples=3, labeller="mmff", seed=0)
    samples = list(sampler.sample(read_molecules(["CCO", "C=O"])))
    path = write_store(tmp_path / "store", iter(samples), lambda: {"kept": sampler.report.kept})
    structures = open_store(path)
    assert isinstance(structures.pos, np.memmap)
    assert len(structures) == 6 and store_info(path)["kept"] == 6
    assert store_info(path)["smiles"] == ["CCO", "C=O"]
    graph = structures.graph(4)
    np.testing.assert_allclose(graph.pos.numpy(), samples[4].positions, atol=1e-6)
    assert graph.z.tolist() == samples[4].numbers.tolist()
    assert graph.energy.item() == pytest.approx(samples[4].energy)
    view = structures.view([5, 0])
    assert len(view) == 2 and view.graph(0).z.tolist() == samples[5].numbers.tolist()
