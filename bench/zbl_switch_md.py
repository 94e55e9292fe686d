"""Where a ZBL repulsion must switch off to keep a model's MD intact, with the network weights fixed:

    python -m bench.zbl_switch_md SNAPSHOT TEST INDEX {off,as-trained,shortest} [--train FILE] [--factor 0.9]

Runs :func:`bench.md_stability.langevin_run` (10 ps at 500 K, the same seed and criteria as
``bench.stability``) from one of the 5 test structures with one of our checkpoints trained with
``model.zbl=true``, its term either removed (``off``), kept (``as-trained``), or switched off for each
element pair seen in ``--train`` at the smaller of its covalent radii sum and ``--factor`` times the
pair's shortest distance in that file (``shortest``; with ``--uncapped`` at that fraction of the
shortest distance even where it exceeds the radii sum, as ``model.zbl_data_switch`` does in
training). Where the term is zero on every training frame
(``model.zbl_switch`` below the shortest ratio there), training does not depend on it, so the three
are the same weights with three repulsions. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.md_stability import langevin_run, starting_frames

PICOSECONDS, TEMPERATURE, FRAMES = 10.0, 500.0, 5


def shortest_distances(path: Path, cutoff: float = 5.0) -> dict[tuple[int, int], float]:
    """The shortest distance (Å) of each element pair (Z_a <= Z_b) over the structures in ``path``."""
    from dens_lightning.data.checks import shortest_pair_distances
    from dens_lightning.data.readers import read_structures

    return shortest_pair_distances(read_structures(path), cutoff)


def switch_at_shortest(repulsion, shortest: dict[tuple[int, int], float], factor: float, capped: bool = True):
    """A copy of ``repulsion`` whose listed pairs switch off at min(radii sum, ``factor`` x shortest
    distance), or at the latter alone if not ``capped`` (what ``model.zbl_data_switch`` does)."""
    from ase.data import covalent_radii

    from dens_lightning.models.repulsion import ZBLRepulsion

    reach = {
        (a, b): min(covalent_radii[a] + covalent_radii[b], factor * d) if capped else factor * d
        for (a, b), d in shortest.items()
    }
    return ZBLRepulsion(repulsion.max_z, repulsion.switch, reach).to(repulsion.pairs.device)


def main() -> int:
    from bench.accuracy import our_calculator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("index", type=int)
    parser.add_argument("mode", choices=["off", "as-trained", "shortest"])
    parser.add_argument("--train", type=Path, help="training file (mode shortest)")
    parser.add_argument("--factor", type=float, default=0.9)
    parser.add_argument("--uncapped", action="store_true", help="let a switch exceed the radii sum")
    args = parser.parse_args()
    calculator = our_calculator(args.snapshot)
    if calculator.potential.repulsion is None:
        parser.error(f"{args.snapshot}: trained without model.zbl; nothing to vary")
    if args.mode == "off":
        calculator.potential.repulsion = None
    elif args.mode == "shortest":
        if args.train is None:
            parser.error("mode shortest needs --train FILE")
        shortest = shortest_distances(args.train)
        calculator.potential.repulsion = switch_at_shortest(
            calculator.potential.repulsion, shortest, args.factor, not args.uncapped
        )
    frame = starting_frames(args.test, FRAMES)[args.index]
    run = langevin_run(frame, calculator, PICOSECONDS, TEMPERATURE, seed=args.index)
    print(json.dumps({"mode": args.mode, "uncapped": args.uncapped, "index": args.index, **run}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
