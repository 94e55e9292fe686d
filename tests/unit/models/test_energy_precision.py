"""Total energies keep float64 precision under a float32 model: a 27-atom organic molecule sits
near -17,000 eV, where a float32 number resolves only 2 meV."""

import numpy as np
import torch

from dens_lightning.data.graph import collate
from dens_lightning.data.structures import Structures
from dens_lightning.models.potential import Potential
from dens_lightning.testing.molecules import molecule_graph, random_molecule

PAINN = {"hidden_channels": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0}
REFERENCES = {1: -13.587_123, 6: -1029.861_457, 7: -1484.973_211, 8: -2041.532_987}  # eV


def test_a_float32_model_sums_its_reference_energies_in_float64():
    torch.manual_seed(0)
    potential = Potential.build("painn", dict(PAINN))
    potential.energy_head.set_statistics(REFERENCES, 1.0)
    potential.energy_head.start_at_references()  # energy = the sum of the references exactly
    potential = potential.float().eval()
    z, pos = random_molecule(27, np.random.default_rng(3))
    z = np.sort(z)[::-1].copy()  # heavy atoms first: the running float32 sum is large early
    graphs = [molecule_graph(z[:n], pos[:n], dtype=torch.float32) for n in (27, 9)]
    energy = potential(collate(graphs), compute_forces=False)["energy"]
    shift = potential.energy_head.shift.double()  # the float32-stored references, summed exactly
    expected = torch.stack([shift[torch.as_tensor(z)].sum(), shift[torch.as_tensor(z[:9])].sum()])
    assert energy.dtype == torch.float64
    torch.testing.assert_close(energy, expected, rtol=0.0, atol=1e-9)


def test_energy_labels_stay_float64_through_batching_and_a_float32_transfer():
    rng = np.random.default_rng(0)
    molecules = [random_molecule(n, rng) for n in (27, 5)]
    labels = [-17_659.123_456_7, -4_209.987_654_3]  # eV; float32 would keep 2 and 0.5 meV steps
    structures = Structures.from_frames([z for z, _ in molecules], [p for _, p in molecules], labels)
    batch = collate([structures.graph(i, dtype=torch.float32) for i in range(2)]).to(dtype=torch.float32)
    assert batch.pos.dtype == torch.float32 and batch.energy.dtype == torch.float64
    np.testing.assert_allclose(batch.energy.numpy(), labels, rtol=0.0, atol=1e-9)
