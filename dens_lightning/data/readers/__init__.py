"""Read structure files into :class:`Structures`, converting to eV and Å.

Formats by extension: ``.xyz``/``.extxyz``, ``.db``, ``.traj`` (through ASE); ``.npz`` (sGDML
``R z E F`` and rMD17 ``nuclear_charges coords energies forces`` layouts are recognised, any other
through key mapping); ``.h5``/``.hdf5`` (ANI-1x and SPICE layouts).
"""

from .dispatch import ASE_SUFFIXES, HDF5_SUFFIXES, NPZ_SUFFIXES, SUFFIXES, ReadOptions, read_structures
from .units import ENERGY_UNITS, LENGTH_UNITS, parse_units

__all__ = [
    "ASE_SUFFIXES",
    "ENERGY_UNITS",
    "HDF5_SUFFIXES",
    "LENGTH_UNITS",
    "NPZ_SUFFIXES",
    "SUFFIXES",
    "ReadOptions",
    "parse_units",
    "read_structures",
]
