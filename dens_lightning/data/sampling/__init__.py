"""Non-equilibrium conformations from SMILES with RDKit, and optional labels.

Molecules (SMILES, a SMILES file or an SDF; :mod:`.molecules`) → ETKDG conformers relaxed with MMFF94
(:mod:`.mmff`) → samples by one of (:mod:`.methods`)

- ``normal-mode``: ANI-1-style normal-mode sampling (Smith, Isayev, Roitberg, Chem. Sci. 8, 3192,
  2017) on the MMFF94 Hessian: numbers ``c_k`` in [0, 1] with ``Σ c_k`` uniform in [0, 1], and a
  displacement ``R_k = ± sqrt(3 c_k N_atoms k_B T / K_k)`` along each internal normal mode ``k`` of
  force constant ``K_k``; the harmonic energy is then ``(3/2) N_atoms k_B T Σ c_k``.
- ``md``: MMFF94 Langevin dynamics (ASE) at the temperature, one sample every ``interval`` steps
  after an equilibration.
- ``perturb``: independent Gaussian displacements of every coordinate with std ``displacement``.

A sample is kept only if its bond graph (pairs closer than 1.25 times the sum of covalent radii) is
that of the minimum: no bond broken, none formed (:mod:`.sampler`). Labels (energy eV, forces eV/Å)
come from MMFF94 through RDKit or GFN2-xTB through tblite (:mod:`.labellers`). :mod:`.output` writes
samples as extxyz; :mod:`.command` is the work of the ``sample`` command.
"""

from .command import SampledFile, sample_to_file
from .labellers import LABELLERS, label_mmff, label_xtb, resolve_labeller
from .methods import (
    BOND_SCALE,
    METHODS,
    MIN_FORCE_CONSTANT,
    bond_graph,
    md_samples,
    normal_mode_sample,
    perturb,
)
from .mmff import (
    BOLTZMANN_KCAL,
    KCAL_PER_MOL,
    MMFFCalculator,
    internal_basis,
    mmff_energy_gradient,
    mmff_field,
    mmff_hessian,
    normal_modes,
)
from .molecules import (
    BUNDLED,
    Molecule,
    bundled_smiles_file,
    conformers,
    molecule_from_geometry,
    molecule_from_smiles,
    read_molecules,
    read_smiles_file,
)
from .output import to_atoms, write_extxyz
from .sampler import Sample, Sampler, SamplingReport

__all__ = [
    "BOLTZMANN_KCAL",
    "BOND_SCALE",
    "BUNDLED",
    "KCAL_PER_MOL",
    "LABELLERS",
    "METHODS",
    "MIN_FORCE_CONSTANT",
    "MMFFCalculator",
    "Molecule",
    "Sample",
    "SampledFile",
    "Sampler",
    "SamplingReport",
    "bond_graph",
    "bundled_smiles_file",
    "conformers",
    "internal_basis",
    "label_mmff",
    "label_xtb",
    "md_samples",
    "mmff_energy_gradient",
    "mmff_field",
    "mmff_hessian",
    "molecule_from_geometry",
    "molecule_from_smiles",
    "normal_mode_sample",
    "normal_modes",
    "perturb",
    "read_molecules",
    "read_smiles_file",
    "resolve_labeller",
    "sample_to_file",
    "to_atoms",
    "write_extxyz",
]
