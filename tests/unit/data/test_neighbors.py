"""neighbor_list against ASE's: the same (i, j, Cartesian shift) pairs for molecules, batches and
periodic cells, whichever backend computes them."""

from collections import Counter

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from dens_lightning.data import neighbors
from dens_lightning.data.neighbors import neighbor_list

MOLECULE_BACKENDS = ["cdist", "vesin", "auto"]
PERIODIC_BACKENDS = ["vesin", "auto"]


def key(i, j, shift) -> tuple:
    return int(i), int(j), tuple(float(x) + 0.0 for x in np.round(shift, 5))


def ase_pairs(atoms: Atoms, cutoff: float, offset: int = 0) -> Counter:
    """ASE's full list as a multiset of (i, j, Cartesian shift), vector i→j = pos[j] - pos[i] + shift."""
    i, j, S = ase_neighbor_list("ijS", atoms, cutoff)
    shifts = S @ atoms.cell.array
    return Counter(key(a + offset, b + offset, s) for a, b, s in zip(i, j, shifts, strict=True))


def batch_ase_pairs(structures, ptr, cutoff):
    """ASE's pairs of every structure of a batch, with atom indices offset by ``ptr``."""
    expected = Counter()
    for atoms, start in zip(structures, ptr[:-1].tolist(), strict=True):
        expected += ase_pairs(atoms, cutoff, offset=start)
    return expected


def our_pairs(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> Counter:
    j, i = edge_index.numpy()  # edge_index is (source j, target i)
    return Counter(key(a, b, s) for a, b, s in zip(i, j, edge_shift.double().numpy(), strict=True))


def batch(structures: list[Atoms], dtype=torch.float64):
    """pos, ptr, cell, pbc of several structures, as neighbor_list takes them."""
    pos = torch.as_tensor(np.concatenate([a.positions for a in structures]), dtype=dtype)
    ptr = torch.as_tensor(np.cumsum([0] + [len(a) for a in structures]), dtype=torch.long)
    cell = torch.as_tensor(np.stack([a.cell.array for a in structures]), dtype=dtype)
    pbc = torch.as_tensor(np.stack([a.pbc for a in structures]))
    return pos, ptr, cell, pbc


def random_molecule(n_atoms: int, rng: np.random.Generator, box: float = 6.0) -> Atoms:
    """Uniform random positions in a box (no minimum distance), no cell, not periodic."""
    return Atoms(numbers=rng.choice([1, 6, 8], size=n_atoms), positions=rng.uniform(0.0, box, (n_atoms, 3)))


def check_edges(edge_index, edge_shift, pos, cutoff):
    """Shape, dtype and the defining property of every edge: |pos[j] - pos[i] + shift| < cutoff."""
    assert edge_index.dtype == torch.long and edge_index.shape[0] == 2
    assert edge_shift.shape == (edge_index.shape[1], 3) and edge_shift.dtype == pos.dtype
    j, i = edge_index
    length = (pos[j] - pos[i] + edge_shift).norm(dim=-1)
    assert bool((length < cutoff).all())
    assert bool((length > 0).all())  # never an atom paired with itself in place
    half = edge_index.shape[1] // 2  # paired: each pair once, then the same pairs reversed
    assert edge_index.shape[1] == 2 * half
    assert torch.equal(edge_index[:, half:], edge_index[:, :half].flip(0))
    assert torch.equal(edge_shift[half:], -edge_shift[:half])


# ---------------------------------------------------------------- molecules


@pytest.mark.parametrize("backend", MOLECULE_BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_molecule_matches_ase(backend, seed):
    rng = np.random.default_rng(seed)
    atoms = random_molecule(int(rng.integers(5, 41)), rng)
    cutoff = 3.0
    pos, ptr, cell, pbc = batch([atoms])
    edge_index, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    check_edges(edge_index, edge_shift, pos, cutoff)
    expected = ase_pairs(atoms, cutoff)
    n = len(atoms)
    assert 0 < sum(expected.values()) < n * (n - 1)  # some pairs in, some out: a real test
    assert our_pairs(edge_index, edge_shift) == expected
    assert not edge_shift.any()


@pytest.mark.parametrize("backend", MOLECULE_BACKENDS)
def test_batch_of_molecules_matches_ase_with_offsets(backend):
    rng = np.random.default_rng(3)
    molecules = [random_molecule(n, rng) for n in (5, 40, 1, 17, 23, 8)]  # a lone atom has no pairs
    cutoff = 3.5
    pos, ptr, cell, pbc = batch(molecules)
    edge_index, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    check_edges(edge_index, edge_shift, pos, cutoff)

    assert our_pairs(edge_index, edge_shift) == batch_ase_pairs(molecules, ptr, cutoff)
    # never across molecules
    structure = torch.repeat_interleave(torch.arange(len(molecules)), ptr.diff())
    assert torch.equal(structure[edge_index[0]], structure[edge_index[1]])
    # each molecule alone gives its own edges, shifted by its offset
    for s in (1, 3):
        alone, _ = neighbor_list(
            pos[ptr[s] : ptr[s + 1]], torch.tensor([0, int(ptr.diff()[s])]), cutoff, backend=backend
        )
        inside = (edge_index[1] >= ptr[s]) & (edge_index[1] < ptr[s + 1])
        assert alone.shape[1] == int(inside.sum()) > 0
        assert {tuple(e) for e in (alone + ptr[s]).T.tolist()} == {
            tuple(e) for e in edge_index[:, inside].T.tolist()
        }


@pytest.mark.parametrize("backend", MOLECULE_BACKENDS)
def test_molecules_without_cell_or_pbc_and_in_float32(backend):
    rng = np.random.default_rng(4)
    molecules = [random_molecule(n, rng) for n in (12, 30)]
    pos, ptr, _, _ = batch(molecules, dtype=torch.float32)
    edge_index, edge_shift = neighbor_list(pos, ptr, 3.0, backend=backend)  # cell and pbc left out
    assert edge_shift.dtype == torch.float32
    expected = ase_pairs(molecules[0], 3.0) + ase_pairs(molecules[1], 3.0, offset=12)
    # float32 positions may move a pair across the cutoff only if it sits within ~1e-6 Å of it
    assert our_pairs(edge_index, edge_shift) == expected


@pytest.mark.parametrize("backend", MOLECULE_BACKENDS)
def test_no_pairs_within_cutoff(backend):
    atoms = Atoms("H3", positions=[[0, 0, 0], [5, 0, 0], [0, 5, 0]])
    pos, ptr, cell, pbc = batch([atoms])
    edge_index, edge_shift = neighbor_list(pos, ptr, 2.0, cell, pbc, backend=backend)
    assert edge_index.shape == (2, 0) and edge_shift.shape == (0, 3)


def test_each_pair_listed_in_both_directions():
    atoms = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]])
    pos, ptr, cell, pbc = batch([atoms])
    for backend in MOLECULE_BACKENDS:
        edge_index, _ = neighbor_list(pos, ptr, 1.5, cell, pbc, backend=backend)
        assert sorted(map(tuple, edge_index.T.tolist())) == [(0, 1), (1, 0)], backend


# ---------------------------------------------------------------- periodic cells


def rattled_silicon() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=5)
    return atoms


def random_triclinic() -> Atoms:
    rng = np.random.default_rng(6)
    cell = np.array([[5.0, 0.0, 0.0], [1.7, 4.6, 0.0], [-1.1, 0.9, 5.3]]) + rng.uniform(-0.3, 0.3, (3, 3))
    atoms = Atoms(numbers=rng.choice([1, 8, 14], size=9), cell=cell, pbc=True)
    atoms.set_scaled_positions(rng.uniform(0.0, 1.0, (9, 3)))
    return atoms


def small_cell() -> Atoms:
    """Cutoff well beyond half the cell: each atom sees its own images, several cells away."""
    return Atoms("HeNe", positions=[[0.1, 0.2, 0.3], [1.3, 1.1, 0.9]], cell=[2.1, 2.4, 2.7], pbc=True)


def slab() -> Atoms:
    """Periodic in x and y only; the z cell vector is there but must not produce images."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=7)
    atoms.pbc = [True, True, False]
    return atoms


PERIODIC = {"silicon": (rattled_silicon, 3.0), "triclinic": (random_triclinic, 4.0), "slab": (slab, 3.0)}


@pytest.mark.parametrize("backend", PERIODIC_BACKENDS)
@pytest.mark.parametrize("name", list(PERIODIC))
def test_periodic_cells_match_ase(name, backend):
    build, cutoff = PERIODIC[name]
    atoms = build()
    pos, ptr, cell, pbc = batch([atoms])
    edge_index, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    check_edges(edge_index, edge_shift, pos, cutoff)
    expected = ase_pairs(atoms, cutoff)
    assert our_pairs(edge_index, edge_shift) == expected
    assert edge_shift.abs().sum(dim=-1).gt(0).any()  # pairs across the boundary are there


@pytest.mark.parametrize("backend", PERIODIC_BACKENDS)
def test_small_cell_sees_own_images(backend):
    atoms, cutoff = small_cell(), 4.5
    assert cutoff > atoms.cell.lengths().max()
    pos, ptr, cell, pbc = batch([atoms])
    edge_index, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    check_edges(edge_index, edge_shift, pos, cutoff)
    assert our_pairs(edge_index, edge_shift) == ase_pairs(atoms, cutoff)
    self_image = edge_index[0] == edge_index[1]
    assert self_image.any() and bool(edge_shift[self_image].norm(dim=-1).gt(2.0).all())
    # images two cells away along x (2.1 Å cell, 4.5 Å cutoff)
    assert bool((edge_shift[:, 0].abs() > 4.0).any())


@pytest.mark.parametrize("backend", PERIODIC_BACKENDS)
def test_slab_has_no_images_along_z(backend):
    atoms, cutoff = slab(), 3.0
    pos, ptr, cell, pbc = batch([atoms])
    _, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    assert not edge_shift[:, 2].any()
    assert edge_shift[:, :2].abs().sum() > 0
    # the same atoms fully periodic do have z images: pbc is honoured per direction
    atoms.pbc = True
    pos, ptr, cell, pbc = batch([atoms])
    _, full_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    assert full_shift[:, 2].abs().sum() > 0
    assert full_shift.shape[0] > edge_shift.shape[0]


@pytest.mark.parametrize("backend", PERIODIC_BACKENDS)
def test_batch_mixing_cells_and_molecules(backend):
    rng = np.random.default_rng(8)
    structures = [random_molecule(10, rng), rattled_silicon(), small_cell(), random_molecule(7, rng), slab()]
    cutoff = 3.2
    pos, ptr, cell, pbc = batch(structures)
    edge_index, edge_shift = neighbor_list(pos, ptr, cutoff, cell, pbc, backend=backend)
    check_edges(edge_index, edge_shift, pos, cutoff)
    assert our_pairs(edge_index, edge_shift) == batch_ase_pairs(structures, ptr, cutoff)
    # the molecules get no shifts
    molecule_atoms = torch.zeros(len(pos), dtype=torch.bool)
    molecule_atoms[ptr[0] : ptr[1]] = True
    molecule_atoms[ptr[3] : ptr[4]] = True
    assert not edge_shift[molecule_atoms[edge_index[1]]].any()


def test_periodic_float32_keeps_dtype():
    atoms = rattled_silicon()
    pos, ptr, cell, pbc = batch([atoms], dtype=torch.float32)
    edge_index, edge_shift = neighbor_list(pos, ptr, 3.0, cell, pbc, backend="vesin")
    assert edge_shift.dtype == torch.float32
    assert our_pairs(edge_index, edge_shift) == ase_pairs(atoms, 3.0)


# ---------------------------------------------------------------- backend choice and errors


@pytest.mark.parametrize("backend", ["cdist", "torch_cluster"])
def test_molecule_only_backends_refuse_periodic_cells(backend):
    pos, ptr, cell, pbc = batch([rattled_silicon()])
    with pytest.raises(ValueError, match=rf"{backend}.*molecules only.*vesin"):
        neighbor_list(pos, ptr, 3.0, cell, pbc, backend=backend)


def test_partly_periodic_cell_is_periodic_for_cdist():
    pos, ptr, cell, pbc = batch([slab()])
    with pytest.raises(ValueError, match="molecules only"):
        neighbor_list(pos, ptr, 3.0, cell, pbc, backend="cdist")


@pytest.mark.parametrize("backend", ["kdtree", "", "CDIST"])
def test_unknown_backend(backend):
    pos, ptr, cell, pbc = batch([random_molecule(5, np.random.default_rng(9))])
    with pytest.raises(ValueError, match=r"expected one of auto, cdist, vesin, torch_cluster"):
        neighbor_list(pos, ptr, 3.0, cell, pbc, backend=backend)


def _refuse(*args, **kwargs):
    raise AssertionError("this backend should not have been chosen")


def test_auto_uses_cdist_for_small_molecules_on_cpu(monkeypatch):
    monkeypatch.setattr(neighbors, "_vesin", _refuse)
    monkeypatch.setattr(neighbors, "_torch_cluster", _refuse)
    atoms = random_molecule(20, np.random.default_rng(10))
    pos, ptr, cell, pbc = batch([atoms])
    edge_index, edge_shift = neighbor_list(pos, ptr, 3.0, cell, pbc, backend="auto")
    assert our_pairs(edge_index, edge_shift) == ase_pairs(atoms, 3.0)


def test_auto_uses_vesin_for_large_structures_and_cells(monkeypatch):
    monkeypatch.setattr(neighbors, "_cdist", _refuse)
    monkeypatch.setattr(neighbors, "_torch_cluster", _refuse)
    rng = np.random.default_rng(11)
    large = random_molecule(neighbors.CDIST_MAX_ATOMS + 20, rng, box=14.0)
    small = random_molecule(6, rng)
    pos, ptr, cell, pbc = batch([small, large])
    edge_index, edge_shift = neighbor_list(pos, ptr, 2.5, cell, pbc, backend="auto")
    assert our_pairs(edge_index, edge_shift) == ase_pairs(small, 2.5) + ase_pairs(large, 2.5, offset=6)
    pos, ptr, cell, pbc = batch([rattled_silicon()])
    edge_index, edge_shift = neighbor_list(pos, ptr, 3.0, cell, pbc, backend="auto")
    assert our_pairs(edge_index, edge_shift) == ase_pairs(rattled_silicon(), 3.0)


def test_torch_cluster_matches_ase():
    pytest.importorskip("torch_cluster")
    rng = np.random.default_rng(12)
    # 60 atoms in a small box: more than torch_cluster's default 32 neighbours per atom
    molecules = [random_molecule(60, rng, box=4.0), random_molecule(9, rng)]
    pos, ptr, cell, pbc = batch(molecules)
    edge_index, edge_shift = neighbor_list(pos, ptr, 3.0, cell, pbc, backend="torch_cluster")
    check_edges(edge_index, edge_shift, pos, 3.0)
    expected = ase_pairs(molecules[0], 3.0) + ase_pairs(molecules[1], 3.0, offset=60)
    assert max(Counter(i for i, _, _ in expected).values()) > 32
    assert our_pairs(edge_index, edge_shift) == expected
