"""Test helpers for backbone authors: :class:`BackboneConformance`, every physics check a backbone
must pass, to subclass in a pytest test file::

    from dens_lightning.testing import BackboneConformance

    class TestMyNet(BackboneConformance):
        backbone = "mynet"  # a registered backbone name
        hyperparameters = {"hidden": 16, "cutoff": 4.0}  # a small size keeps it fast

and the random molecules and graphs the checks use. This package imports pytest, which only the
``dev`` extra installs (``pip install dens_lightning[dev]``): import it from tests, never from code
that trains or serves a model.
"""

from .conformance import BackboneConformance
from .molecules import (
    batch_of,
    batch_of_molecules,
    molecule_graph,
    molecules,
    periodic_graph,
    random_molecule,
    rattled_silicon,
    three_molecules,
    triclinic_cell,
)
from .potentials import DTYPES, energy_forces, make_noise_predictor, make_potential

__all__ = [
    "DTYPES",
    "BackboneConformance",
    "batch_of",
    "batch_of_molecules",
    "energy_forces",
    "make_noise_predictor",
    "make_potential",
    "molecule_graph",
    "molecules",
    "periodic_graph",
    "random_molecule",
    "rattled_silicon",
    "three_molecules",
    "triclinic_cell",
]
