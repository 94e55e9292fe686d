"""How the time of one energy + forces evaluation grows with system size, 20 to 5,000 atoms, for
molecules and periodic cells, each backbone at its default size.

    python -m bench.scaling [--sizes 20 100 500 1000 5000] [--backbones schnet painn equiformer]

Systems: H, C and O atoms at random positions at 0.1 atoms/Å^3 (liquid water's atom density, ~52
neighbours within 5 Å), either free (a molecule) or in a periodic cubic cell. One call is what the ASE
calculator does: neighbour list (cdist up to 256 atoms, then vesin cell lists; vesin for cells), the
backbone, the energy head and the autograd forces, float32, 2 threads. Median of 5 calls (3 where
one takes over 0.6 s, 1 over 15 s) after a first one.

Each case runs in its own process, so its peak memory is its own: the peak resident size during the
calls minus the size before them (imports, model, the structure), i.e. what the evaluation needs on
top of the model; the largest system a machine handles follows from it. Each case runs twice, in
alternating order: as a script of yours runs it, and with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``,
as the command line runs (:mod:`dens_lightning.allocator`: huge pages for blocks above 32 MB).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.common import (
    MALLOC_CONDITIONS,
    alternating_trials,
    machine,
    peak_rss_mb,
    timed,
    write_section,
)

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


def measure(name: str, periodic: bool, size: int, recompute: bool = False) -> dict:
    """One case, in this process: median seconds of one call (after a first, untimed one, also
    returned) and of its neighbour list alone, the number of edges, and the peak memory of the calls
    (MB above the process before them). ``recompute``: blocks recomputed in the force backward
    (:meth:`~dens_lightning.models.potential.Potential.recompute_blocks`)."""
    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.data.atoms import atoms_graph
    from dens_lightning.data.neighbors import neighbor_list
    from dens_lightning.models.potential import Potential

    keep_freed_memory()  # as DensCalculator does
    torch.set_num_threads(2)
    torch.manual_seed(0)
    potential = Potential.build(name, {}).eval().recompute_blocks(recompute)
    graph = atoms_graph(system(size, periodic))
    before = peak_rss_mb()
    start = time.perf_counter()
    potential(graph, compute_forces=True)
    first = time.perf_counter() - start
    repeats = 5 if first < 0.6 else 3 if first < 15.0 else 1  # one call of the largest: a minute
    call, _ = timed(lambda: potential(graph, compute_forces=True), repeats, warmup=0)
    peak = peak_rss_mb() - before
    args = (graph.pos, graph.ptr, potential.cutoff, graph.cell, graph.pbc, potential.neighbor_backend)
    neighbors, _ = timed(lambda: neighbor_list(*args), repeats, warmup=1)
    edges = int(neighbor_list(*args)[0].shape[1])
    return {"call": call, "first": first, "neighbors": neighbors, "edges": edges, "peak_mb": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 500, 1000, 5000])
    parser.add_argument("--backbones", nargs="+", default=["schnet", "painn", "equiformer"])
    parser.add_argument("--trial", nargs=3, help=argparse.SUPPRESS)  # backbone, molecule|cell, size
    args = parser.parse_args()
    if args.trial:
        name, kind, size = args.trial
        print(json.dumps(measure(name, kind == "cell", int(size))))
        return 0
    torch.set_num_threads(2)  # as every trial runs (the machine line says so)
    rows = [
        "| backbone | system | atoms | edges per atom | ms per call | µs per atom "
        "| ms per call, huge pages | first call (ms), plain / huge pages | neighbour list (ms) "
        "| peak memory (MB), plain / huge pages |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    count = 0
    for name in args.backbones:
        for kind in ("molecule", "cell"):
            for size in args.sizes:
                cases = alternating_trials("bench.scaling", MALLOC_CONDITIONS, count, name, kind, str(size))
                count += 1
                plain, huge = cases["plain"], cases["huge"]
                rows.append(
                    f"| {name} | {'periodic cell' if kind == 'cell' else 'molecule'} | {size:,} "
                    f"| {plain['edges'] / size:.0f} | {plain['call'] * 1e3:.1f} "
                    f"| {plain['call'] / size * 1e6:.0f} | {huge['call'] * 1e3:.1f} "
                    f"| {plain['first'] * 1e3:.0f} / {huge['first'] * 1e3:.0f} "
                    f"| {plain['neighbors'] * 1e3:.1f} | {plain['peak_mb']:,.0f} / {huge['peak_mb']:,.0f} |"
                )
                print(rows[-1], flush=True)
    lines = [
        "## Scaling with system size: one energy + forces evaluation",
        "",
        f"`python -m bench.scaling`; {machine()}; float32; each backbone at its default size. H, C, O",
        "atoms at random positions, 0.1 atoms/Å^3, free or in a periodic cube; one call = neighbour list",
        "+ model + autograd forces (what the ASE calculator runs, malloc tuned as it tunes it); median of",
        "5 calls (3 over 0.6 s, 1 over 15 s) after a first one, whose time is given apart. Each case in",
        "its own process; peak memory: the peak resident size during the calls minus the size before",
        "them (imports, model and structure excluded). 'Huge pages': the same case with",
        "`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, as the command line runs (it restarts itself with it;",
        "`dens_lightning.allocator`); the plain columns are a script of yours without it.",
        "",
        *rows,
    ]
    write_section("scaling", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
