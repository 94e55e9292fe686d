"""Physics every registered backbone must satisfy: symmetry, conservative forces, batching,
locality, smoothness and periodic images. The checks ship in the package
(:class:`dens_lightning.testing.BackboneConformance`); each built-in backbone runs them through a
subclass here, and the tests below check what is not one backbone's."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dens_lightning.data.graph import collate
from dens_lightning.models import BACKBONES
from dens_lightning.models.heads import EdgeNoiseHead, build_noise_head
from dens_lightning.models.potential import Potential
from dens_lightning.testing import DTYPES, BackboneConformance
from dens_lightning.testing import make_potential as make_sized_potential
from dens_lightning.testing.molecules import (  # noqa: F401  (periodic_graph, triclinic_cell: other tests')
    molecule_graph,
    periodic_graph,
    triclinic_cell,
)

# small sizes keep the suite fast (other tests build their models at these sizes too)
SMALL = {
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
    "painn": {"hidden_channels": 16, "num_interactions": 2, "num_rbf": 10, "cutoff": 4.0},
    "equiformer": {
        "num_channels": 8,
        "num_layers": 2,
        "num_heads": 2,
        "attention_channels": 4,
        "num_rbf": 10,
        "radial_hidden": 16,
        "ffn_channels": 8,
        "cutoff": 4.0,
    },
}


class TestSchNet(BackboneConformance):
    backbone = "schnet"
    hyperparameters = SMALL["schnet"]


class TestPaiNN(BackboneConformance):
    backbone = "painn"
    hyperparameters = SMALL["painn"]


class TestEquiformer(BackboneConformance):
    backbone = "equiformer"
    hyperparameters = SMALL["equiformer"]


def test_every_built_in_backbone_runs_the_conformance_suite():
    """A new built-in backbone cannot be forgotten: it needs its subclass above."""
    built_in = {name for name, cls in BACKBONES.items() if cls.__module__.startswith("dens_lightning.")}
    checked = {
        cls.backbone
        for cls in globals().values()
        if isinstance(cls, type) and issubclass(cls, BackboneConformance) and cls.__test__
    }
    assert built_in, "no built-in backbone is registered"
    assert built_in <= checked, f"no BackboneConformance subclass for {sorted(built_in - checked)}"


def make_potential(name: str, dtype: torch.dtype) -> Potential:
    """The backbone ``name`` at its size in SMALL (its default size without an entry)."""
    return make_sized_potential(name, SMALL.get(name, {}), dtype)


@pytest.fixture(params=sorted(BACKBONES))
def name(request):
    """Every registered backbone (for tests elsewhere that run on each)."""
    return request.param


def test_collate_keeps_single_and_batched_neighbours_consistent(molecules):
    graphs = [molecule_graph(z, p) for z, p in molecules]
    batch = collate(graphs)
    assert batch.num_graphs == 3
    assert batch.num_atoms.tolist() == [len(z) for z, _ in molecules]
    assert batch.batch.tolist() == sum(([k] * len(z) for k, (z, _) in enumerate(molecules)), [])
    # graphs with their lists collate into one paired list: the batch's own list, edge for edge
    potential = make_potential("schnet", torch.float64)
    merged = collate([potential.prepare(g) for g in graphs])
    built = potential.prepare(batch)
    assert merged.paired and built.paired
    assert torch.equal(merged.edge_index, built.edge_index)
    assert torch.equal(merged.edge_shift, built.edge_shift)


# ------------------------------------------------------------------ noise heads


@pytest.mark.parametrize("blocks", [0, 1])
def test_edge_noise_head_is_equivariant_batches_and_ignores_edge_order(blocks, molecules):
    """DeNS's noise head for scalar-only backbones (no derivative), with and without a SchNet
    interaction before it: it rotates and reflects with the molecule, ignores translations, follows
    a permutation of the atoms, gives on a batch what it gives on each molecule, and gives the same
    on a shuffled unpaired edge list."""
    potential = make_potential("schnet", torch.float64)
    head = build_noise_head(potential.backbone, differentiate=False, blocks=blocks).double()
    assert isinstance(head, EdgeNoiseHead) and len(head.message_blocks) == blocks
    assert not head.needs_position_grad
    tol = DTYPES[torch.float64]

    def noise(graph):
        graph = potential.prepare(graph)
        return head(potential.backbone(graph), graph).detach()

    for z, pos in molecules:
        n0 = noise(molecule_graph(z, pos))
        assert n0.abs().max() > 1e-4
        for k, matrix in enumerate([Rotation.random(random_state=1).as_matrix(), -np.eye(3)]):
            shift = np.random.default_rng(k).normal(0, 5, 3)
            moved = noise(molecule_graph(z, pos @ matrix.T + shift))
            torch.testing.assert_close(moved, n0 @ torch.as_tensor(matrix.T), **tol)
        perm = np.random.default_rng(2).permutation(len(z))
        torch.testing.assert_close(noise(molecule_graph(z[perm], pos[perm])), n0[perm], **tol)
    graph = potential.prepare(collate([molecule_graph(z, p) for z, p in molecules]))
    batched = noise(graph)
    torch.testing.assert_close(batched, torch.cat([noise(molecule_graph(z, p)) for z, p in molecules]), **tol)
    order = torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = graph.replace(
        edge_index=graph.edge_index[:, order], edge_shift=graph.edge_shift[order], paired=False
    )
    torch.testing.assert_close(noise(shuffled), batched, **tol)


# ------------------------------------------------------------------ through the CLI


def test_a_backbone_range_check_names_the_keys(tmp_path, capsys):
    from dens_lightning.cli import main

    argv = ["finetune", "--run-dir", str(tmp_path / "r"), "model.name=equiformer", "model.num_heads=3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "model.num_heads=3" in err and "model.num_channels" in err and "\n" not in err
