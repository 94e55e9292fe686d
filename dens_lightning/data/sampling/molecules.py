"""Molecules to sample: from SMILES, a SMILES file or an SDF, or around a given geometry; their
MMFF94-relaxed ETKDG conformers."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import InputError

BUNDLED = "bundled"


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
