"""How the time of one energy + forces evaluation grows with system size, 20 to 5,000 atoms, for
molecules and periodic cells, each backbone at its default size.

    python bench/scaling.py [--sizes 20 100 500 1000 5000] [--backbones schnet painn equiformer]

Systems: H, C and O atoms at random positions at 0.1 atoms/Å^3 (liquid water's atom density, ~52
neighbours within 5 Å), either free (a molecule) or in a periodic cubic cell. One call is what the ASE
calculator does: neighbour list (cdist up to 256 atoms, then vesin cell lists; vesin for cells), the
backbone, the energy head and the autograd forces, float32, 2 threads. Median of up to 5 calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, timed, write_section  # noqa: E402

DENSITY = 0.1  # atoms per Å^3
ELEMENTS = (1, 6, 8)


def system(size: int, periodic: bool, seed: int = 0):
    from ase import Atoms

    side = (size / DENSITY) ** (1 / 3)
    positions = np.random.default_rng(seed).uniform(0, side, (size, 3))
    numbers = [ELEMENTS[k % 3] for k in range(size)]
    if periodic:
        return Atoms(numbers=numbers, positions=positions, cell=np.eye(3) * side, pbc=True)
    return Atoms(numbers=numbers, positions=positions)


def measure(potential, atoms) -> tuple[float, float, int]:
    """Median seconds of one call, of its neighbour list alone, and the number of edges."""
    from dens_lightning.data.atoms import atoms_graph
    from dens_lightning.data.neighbors import neighbor_list

    graph = atoms_graph(atoms)
    start = time.perf_counter()
    potential(graph, compute_forces=True)
    first = time.perf_counter() - start
    repeats = max(1, min(5, int(3.0 / max(first, 1e-3))))
    call, _ = timed(lambda: potential(graph, compute_forces=True), repeats, warmup=0)
    args = (graph.pos, graph.ptr, potential.cutoff, graph.cell, graph.pbc, potential.neighbor_backend)
    neighbors, _ = timed(lambda: neighbor_list(*args), repeats, warmup=1)
    return call, neighbors, int(neighbor_list(*args)[0].shape[1])


def main() -> int:
    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.models.potential import Potential

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 500, 1000, 5000])
    parser.add_argument("--backbones", nargs="+", default=["schnet", "painn", "equiformer"])
    args = parser.parse_args()
    keep_freed_memory()  # as DensCalculator does
    torch.set_num_threads(2)
    rows = [
        "| backbone | system | atoms | edges per atom | ms per call | µs per atom | neighbour list (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.backbones:
        torch.manual_seed(0)
        potential = Potential.build(name, {}).eval()
        for periodic in (False, True):
            for size in args.sizes:
                call, neighbors, edges = measure(potential, system(size, periodic))
                kind = "periodic cell" if periodic else "molecule"
                rows.append(
                    f"| {name} | {kind} | {size:,} | {edges / size:.0f} | {call * 1e3:.1f} "
                    f"| {call / size * 1e6:.0f} | {neighbors * 1e3:.1f} |"
                )
                print(rows[-1], flush=True)
    lines = [
        "## Scaling with system size: one energy + forces evaluation",
        "",
        f"`python bench/scaling.py`; {machine()}; float32; each backbone at its default size. H, C, O",
        "atoms at random positions, 0.1 atoms/Å^3, free or in a periodic cube; one call = neighbour list",
        "+ model + autograd forces (what the ASE calculator runs, malloc tuned as it tunes it); median of",
        "up to 5 calls.",
        "",
        *rows,
    ]
    write_section("scaling", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
