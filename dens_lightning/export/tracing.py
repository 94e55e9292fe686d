"""Tracing a :class:`~dens_lightning.models.potential.Potential` into the exported signature: the
forward pass and its gradient together, as aten operations with free sizes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import Atoms
from torch import Tensor, nn

from ..data.atoms import atoms_graph
from ..data.graph import Graph
from ..models.potential import Potential

INPUT_NAMES = ("z", "pos", "cell", "batch", "edge_index", "edge_shift")


class ForceField(nn.Module):
    """The exported signature around a :class:`Potential` (see :mod:`dens_lightning.export`)."""

    def __init__(self, potential: Potential):
        super().__init__()
        self.potential = potential

    def forward(
        self, z: Tensor, pos: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, edge_shift: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        num_structures = cell.shape[0]
        graph = Graph(
            z=z,
            pos=pos,
            batch=batch,
            ptr=torch.zeros(num_structures + 1, dtype=torch.long, device=z.device),  # only its size is read
            cell=cell,
            pbc=torch.zeros(num_structures, 3, dtype=torch.bool, device=z.device),  # not read: edges given
            edge_index=edge_index,
            edge_shift=edge_shift,
        )
        out = self.potential.evaluate(graph, compute_forces=True, create_graph=False, compute_virial=True)
        return out["energy"], out["forces"], out["virial"]


def graph_inputs(graph: Graph) -> tuple[Tensor, ...]:
    """A batch with its neighbour list as the exported function's inputs, in order."""
    if graph.edge_index is None:
        raise ValueError("build the neighbour list first (Potential.prepare)")
    return graph.z, graph.pos, graph.cell, graph.batch, graph.edge_index, graph.edge_shift


def model_elements(potential: Potential) -> list[int]:
    """The elements the model was trained on (H, C, O where its metadata does not say)."""
    return list(potential.metadata.get("elements") or [1, 6, 8])


def random_molecules(elements: Sequence[int], sizes: Sequence[int], seed: int) -> list[Atoms]:
    """Compact random molecules of the given sizes, their atoms cycling through ``elements``."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for n in sizes:
        box = 1.5 * n ** (1 / 3) + 1.0
        positions = torch.rand(n, 3, generator=generator, dtype=torch.float64) * box
        images.append(Atoms(numbers=[elements[k % len(elements)] for k in range(n)], positions=positions))
    return images


def example_batch(potential: Potential, device: torch.device) -> Graph:
    """Two small molecules of the model's elements: the tracing example. Their sizes only seed the
    symbolic shapes, which stay free."""
    images = random_molecules(model_elements(potential), (5, 7), seed=0)
    dtype = next(potential.parameters()).dtype
    return potential.prepare(atoms_graph(images, dtype).to(device))


def trace(potential: Potential, device: str | torch.device = "cpu") -> torch.export.ExportedProgram:
    """The model's energy, forces and virial as a ``torch.export`` program with free sizes."""
    import torch.fx.experimental._config as fx_config
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    device = torch.device(device)
    module = ForceField(potential.to(device).eval())
    example = graph_inputs(example_batch(potential, device))
    recompute = potential.backbone.recompute_blocks  # a traced graph holds every operation once
    potential.recompute_blocks(False)
    # no duck sizing: a size that happens to equal another (2 structures, 2 rows of edge_index) must
    # not be tied to it
    try:
        with torch.enable_grad(), fx_config.patch(use_duck_shape=False):
            traced = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    finally:
        potential.recompute_blocks(recompute)
    atoms, edges, structures = Dim("atoms", min=1), Dim("edges", min=1), Dim("structures", min=1)
    shapes = ({0: atoms}, {0: atoms}, {0: structures}, {0: atoms}, {1: edges}, {0: edges})
    return torch.export.export(traced, example, dynamic_shapes=shapes, strict=False)
