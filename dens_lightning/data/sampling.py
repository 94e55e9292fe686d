"""Non-equilibrium conformations from SMILES with RDKit, and optional labels.

Molecules (SMILES, a SMILES file or an SDF) → ETKDG conformers relaxed with MMFF94 → samples by one of

- ``normal-mode``: ANI-1-style normal-mode sampling (Smith, Isayev, Roitberg, Chem. Sci. 8, 3192,
  2017) on the MMFF94 Hessian: numbers ``c_k`` in [0, 1] with ``Σ c_k`` uniform in [0, 1], and a
  displacement ``R_k = ± sqrt(3 c_k N_atoms k_B T / K_k)`` along each internal normal mode ``k`` of
  force constant ``K_k``; the harmonic energy is then ``(3/2) N_atoms k_B T Σ c_k``.
- ``md``: MMFF94 Langevin dynamics (ASE) at the temperature, one sample every ``interval`` steps
  after an equilibration.
- ``perturb``: independent Gaussian displacements of every coordinate with std ``displacement``.

A sample is kept only if its bond graph (pairs closer than 1.25 times the sum of covalent radii) is
that of the minimum: no bond broken, none formed. Labels (energy eV, forces eV/Å) come from MMFF94
through RDKit or GFN2-xTB through tblite.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from ase import units as ase_units
from ase.calculators.calculator import Calculator, all_changes
from ase.data import covalent_radii

from ..errors import InputError

KCAL_PER_MOL = ase_units.kcal / ase_units.mol  # eV
BOLTZMANN_KCAL = ase_units.kB / KCAL_PER_MOL  # kcal/mol/K
METHODS = ("normal-mode", "md", "perturb")
LABELLERS = ("auto", "xtb", "mmff", "none")
BOND_SCALE = 1.25  # bonded: closer than this times the sum of covalent radii
MIN_FORCE_CONSTANT = 1.0  # kcal/mol/Å², floor on soft (torsional) modes so displacements stay finite
BUNDLED = "bundled"


# ------------------------------------------------------------------ molecules


@dataclass
class Molecule:
    """A molecule to sample: from SMILES (ETKDG conformers relaxed with MMFF94), or around a given
    minimum (e.g. a DFT geometry), whose MMFF94 typing is then derived from the geometry."""

    smiles: str
    mol: object | None  # rdkit.Chem.Mol with explicit hydrogens; None: made from ``numbers``, ``minimum``
    numbers: np.ndarray | None = None  # with ``minimum``: the atoms of the given geometry
    minimum: np.ndarray | None = None  # Å; sample around this geometry instead of MMFF94 conformers


def molecule_from_smiles(smiles: str):
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InputError(f"SMILES {smiles!r}: RDKit cannot parse it")
    return Chem.AddHs(mol)


def molecule_from_geometry(numbers: np.ndarray, positions: np.ndarray, smiles: str = ""):
    """An RDKit molecule with bonds and bond orders assigned from a neutral geometry (xyz2mol, as in
    RDKit's ``rdDetermineBonds``), typed for MMFF94; InputError when either step fails."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem, rdDetermineBonds

    quiet = rdBase.BlockLogs()  # noqa: F841 -- RDKit's own lines on a failure would repeat the error
    table = Chem.GetPeriodicTable()
    lines = [
        f"{table.GetElementSymbol(int(z))} {x:.6f} {y:.6f} {w:.6f}"
        for z, (x, y, w) in zip(numbers, positions)
    ]
    mol = Chem.MolFromXYZBlock(f"{len(lines)}\n\n" + "\n".join(lines))
    try:
        rdDetermineBonds.DetermineBonds(mol, charge=0)
    except (ValueError, RuntimeError) as error:
        raise InputError(f"molecule {smiles!r}: no neutral bond orders for its geometry ({error})") from None
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise InputError(f"molecule {smiles!r}: MMFF94 has no parameters for this molecule")
    return mol


def bundled_smiles_file() -> Path:
    """The packaged list of small organic molecules used by the embedded pretraining default."""
    return Path(str(resources.files("dens_lightning.data") / "pretrain_molecules.smi"))


def read_smiles_file(path: str | Path) -> list[str]:
    """SMILES from a file: the first token of each line; blank lines and ``#`` comments skipped."""
    path = bundled_smiles_file() if str(path) == BUNDLED else Path(path)
    if not path.exists():
        raise InputError(f"{path}: SMILES file not found")
    smiles = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]
    if not smiles:
        raise InputError(f"{path}: no SMILES found (one per line expected)")
    return smiles


def read_molecules(
    smiles: list[str] | None = None, smiles_file: str | Path | None = None, sdf: str | Path | None = None
) -> list[Molecule]:
    """Molecules with explicit hydrogens from SMILES strings, a SMILES file and/or an SDF file."""
    from rdkit import Chem

    molecules = [Molecule(s, molecule_from_smiles(s)) for s in smiles or []]
    if smiles_file is not None:
        molecules += [Molecule(s, molecule_from_smiles(s)) for s in read_smiles_file(smiles_file)]
    if sdf is not None:
        if not Path(sdf).exists():
            raise InputError(f"{sdf}: SDF file not found")
        for k, mol in enumerate(Chem.SDMolSupplier(str(sdf), removeHs=False)):
            if mol is None:
                raise InputError(f"{sdf}: record {k}: RDKit cannot read it")
            mol = Chem.AddHs(mol, addCoords=True)
            molecules.append(Molecule(Chem.MolToSmiles(Chem.RemoveHs(mol)), mol))
    if not molecules:
        raise InputError("no molecules given: pass SMILES, a SMILES file or an SDF file")
    return molecules


def conformers(smiles_or_mol, count: int, seed: int) -> tuple[object, np.ndarray, list[np.ndarray]]:
    """``count`` MMFF94-relaxed ETKDG conformers: (RDKit molecule, atomic numbers, positions in Å)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    if isinstance(smiles_or_mol, str):
        mol, name = molecule_from_smiles(smiles_or_mol), smiles_or_mol
    else:
        mol, name = Chem.Mol(smiles_or_mol), Chem.MolToSmiles(Chem.RemoveHs(smiles_or_mol))
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise InputError(f"SMILES {name!r}: MMFF94 has no parameters for this molecule")
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(count), params=params))
    if not ids:
        raise InputError(f"SMILES {name!r}: RDKit could not embed a 3D conformer")
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    numbers = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    return mol, numbers, [mol.GetConformer(i).GetPositions() for i in ids]


# ------------------------------------------------------------------ MMFF94


def mmff_field(mol):
    from rdkit.Chem import AllChem

    return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))


def mmff_energy_gradient(field, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """MMFF94 energy (kcal/mol) and gradient (kcal/mol/Å) at ``positions`` (Å).

    The energy is evaluated first on purpose: RDKit's ``CalcGrad(pos)`` alone can return the
    gradient of a stale state (measured: a Hessian element 4x too small)."""
    flat = np.asarray(positions, dtype=np.float64).reshape(-1).tolist()
    return field.CalcEnergy(flat), np.asarray(field.CalcGrad(flat)).reshape(-1, 3)


def mmff_hessian(field, positions: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """[3N, 3N] Hessian (kcal/mol/Å²) by central differences of the analytic gradient."""
    x = np.asarray(positions, dtype=np.float64).reshape(-1)
    hessian = np.empty((x.size, x.size))
    for k in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus[k] += step
        minus[k] -= step
        difference = mmff_energy_gradient(field, plus)[1] - mmff_energy_gradient(field, minus)[1]
        hessian[k] = difference.reshape(-1) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def internal_basis(positions: np.ndarray) -> np.ndarray:
    """Orthonormal basis [3N, 3N - 6] (or - 5, linear) of the displacements that are not rigid
    translations or rotations."""
    n = len(positions)
    centred = positions - positions.mean(axis=0)
    rigid = []
    for axis in np.eye(3):
        rigid.append(np.tile(axis, n))
        rigid.append(np.cross(axis, centred).reshape(-1))
    q, r = np.linalg.qr(np.array(rigid).T)
    rank = int((np.abs(np.diag(r)) > 1e-8 * max(1.0, np.abs(r).max())).sum())
    full, _ = np.linalg.qr(np.concatenate([q[:, :rank], np.eye(3 * n)], axis=1))
    return full[:, rank : 3 * n]


def normal_modes(field, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Force constants [M] (kcal/mol/Å²) and unit Cartesian normal modes [M, N, 3] of the internal
    motions at a minimum (classical configurational sampling needs no mass weighting)."""
    basis = internal_basis(positions)
    constants, vectors = np.linalg.eigh(basis.T @ mmff_hessian(field, positions) @ basis)
    modes = (basis @ vectors).T.reshape(-1, len(positions), 3)
    return constants, modes


# ------------------------------------------------------------------ samplers


def perturb(positions: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return positions + rng.normal(0.0, std, size=positions.shape)


def normal_mode_sample(
    minimum: np.ndarray,
    constants: np.ndarray,
    modes: np.ndarray,
    temperature: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One ANI-1-style normal-mode sample around ``minimum`` at ``temperature`` (K)."""
    c = rng.uniform(0.0, 1.0, size=len(constants))
    c *= rng.uniform(0.0, 1.0) / c.sum()
    force_constants = np.maximum(np.abs(constants), MIN_FORCE_CONSTANT)
    amplitude = np.sqrt(3.0 * c * len(minimum) * BOLTZMANN_KCAL * temperature / force_constants)
    signs = rng.choice([-1.0, 1.0], size=len(constants))
    return minimum + np.einsum("k,kij->ij", signs * amplitude, modes)


def md_samples(
    mol, minimum: np.ndarray, count: int, temperature: float, rng: np.random.Generator, interval: int = 20
) -> Iterator[np.ndarray]:
    """Snapshots of MMFF94 Langevin dynamics (0.5 fs steps, friction 0.01/fs) started at the minimum
    with Maxwell–Boltzmann velocities, after ``10 * interval`` steps of equilibration."""
    from ase import Atoms
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    atoms = Atoms(numbers=numbers, positions=minimum)
    atoms.set_constraint(FixCom())
    atoms.calc = MMFFCalculator(mol)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(
        atoms,
        timestep=0.5 * ase_units.fs,
        temperature_K=temperature,
        friction=0.01 / ase_units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(10 * interval)
    for _ in range(count):
        dynamics.run(interval)
        yield atoms.get_positions()


def bond_graph(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Boolean [N, N] adjacency: pairs closer than ``BOND_SCALE`` times their covalent radii sum."""
    radii = covalent_radii[numbers]
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = distances < BOND_SCALE * (radii[:, None] + radii[None])
    np.fill_diagonal(bonded, False)
    return bonded


# ------------------------------------------------------------------ labels


def resolve_labeller(name: str) -> str:
    """``auto`` → ``xtb`` when tblite is installed, else ``mmff``."""
    has_xtb = importlib.util.find_spec("tblite") is not None
    if name == "auto":
        return "xtb" if has_xtb else "mmff"
    if name == "xtb" and not has_xtb:
        raise InputError("labeller 'xtb' needs tblite: pip install 'dens_lightning[xtb]'")
    if name not in LABELLERS:
        raise InputError(f"labeller {name!r}: expected one of {', '.join(LABELLERS)}")
    return name


def label_xtb(numbers: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray] | None:
    """GFN2-xTB energy (eV) and forces (eV/Å); None when the SCF does not converge."""
    from tblite.interface import Calculator

    try:
        calc = Calculator("GFN2-xTB", numbers, positions / ase_units.Bohr)
        calc.set("verbosity", 0)
        result = calc.singlepoint()
    except RuntimeError:
        return None
    energy = float(result.get("energy")) * ase_units.Hartree
    forces = -np.asarray(result.get("gradient")) * ase_units.Hartree / ase_units.Bohr
    return energy, forces


def label_mmff(mol, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """MMFF94 energy (eV) and forces (eV/Å)."""
    energy, gradient = mmff_energy_gradient(mmff_field(mol), positions)
    return energy * KCAL_PER_MOL, -gradient * KCAL_PER_MOL


class MMFFCalculator(Calculator):
    """A minimal ASE calculator for MMFF94 through RDKit (energy eV, forces eV/Å)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, mol):
        super().__init__()
        self.field = mmff_field(mol)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, gradient = mmff_energy_gradient(self.field, self.atoms.positions)
        self.results = {"energy": energy * KCAL_PER_MOL, "forces": -gradient * KCAL_PER_MOL}


# ------------------------------------------------------------------ the sampler


@dataclass
class Sample:
    numbers: np.ndarray
    positions: np.ndarray  # Å
    smiles: str
    conformer: int
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # eV/Å


@dataclass
class SamplingReport:
    kept: int = 0
    rejected_bonds: int = 0  # samples whose bond graph changed
    unlabelled: int = 0  # samples whose labelling failed (xTB SCF not converged)
    untyped: int = 0  # molecules given as a geometry without neutral bond orders or MMFF94 types


@dataclass
class Sampler:
    """Draws ``samples`` conformations per conformer, ``conformers`` conformers per molecule.

    Each molecule has its own random stream (``seed``, its position in the list), so the samples of
    a molecule do not depend on which other molecules are sampled.
    """

    method: str = "normal-mode"
    temperature: float = 300.0  # K
    displacement: float = 0.05  # Å (perturb)
    conformers: int = 1
    samples: int = 10
    labeller: str = "none"
    seed: int = 0
    max_attempts: int = 20  # per kept sample, before giving up on a conformer
    report: SamplingReport = field(default_factory=SamplingReport)

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"sampling method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.temperature <= 0:
            raise InputError(f"temperature {self.temperature}: expected a temperature in K > 0")
        self.labeller = resolve_labeller(self.labeller)

    def sample(self, molecules: list[Molecule]) -> Iterator[Sample]:
        for k, molecule in enumerate(molecules):
            yield from self.sample_molecule(molecule, self.molecule_rng(k))

    def molecule_rng(self, k: int) -> np.random.Generator:
        """The random stream of the ``k``-th molecule of a list."""
        return np.random.default_rng([self.seed, k])

    def sample_molecule(self, molecule: Molecule, rng: np.random.Generator) -> Iterator[Sample]:
        if molecule.minimum is None:
            mol, numbers, minima = conformers(molecule.mol, self.conformers, int(rng.integers(2**31)))
        else:
            numbers, minima = molecule.numbers, [molecule.minimum]
            mol = molecule.mol
            if mol is None:
                try:
                    mol = molecule_from_geometry(numbers, molecule.minimum, molecule.smiles)
                except InputError:
                    self.report.untyped += 1
                    return
        for c, minimum in enumerate(minima):
            reference = bond_graph(numbers, minimum)
            draws = self._draws(mol, minimum, rng)
            kept = attempts = 0
            while kept < self.samples and attempts < self.max_attempts * self.samples:
                attempts += 1
                positions = next(draws)
                if not np.array_equal(bond_graph(numbers, positions), reference):
                    self.report.rejected_bonds += 1
                    continue
                sample = Sample(numbers, positions, molecule.smiles, c)
                if self.labeller != "none" and not self._label(sample, mol):
                    self.report.unlabelled += 1
                    continue
                kept += 1
                self.report.kept += 1
                yield sample

    def _draws(self, mol, minimum: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
        if self.method == "normal-mode":
            constants, modes = normal_modes(mmff_field(mol), minimum)
            while True:
                yield normal_mode_sample(minimum, constants, modes, self.temperature, rng)
        elif self.method == "md":
            while True:
                yield from md_samples(mol, minimum, self.samples, self.temperature, rng)
        else:
            while True:
                yield perturb(minimum, self.displacement, rng)

    def _label(self, sample: Sample, mol) -> bool:
        label = (
            label_xtb(sample.numbers, sample.positions)
            if self.labeller == "xtb"
            else label_mmff(mol, sample.positions)
        )
        if label is None:
            return False
        sample.energy, sample.forces = label
        return True

    def describe(self) -> dict:
        """What goes in each frame's info line."""
        info = {"method": self.method, "labeller": self.labeller}
        if self.method == "perturb":
            info["displacement"] = self.displacement
        else:
            info["temperature"] = self.temperature
        return info


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

    from ..files import replacing

    with replacing(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return Path(path)
