"""Peak memory and time of one energy + forces evaluation of a large periodic cell, with each block's
activations kept for the backward pass (the default) and recomputed there instead
(``DensCalculator(..., low_memory=True)``, :meth:`Potential.recompute_blocks`).

    python -m bench.low_memory [--sizes 1000 5000] [--backbones schnet painn equiformer]

The systems, the call and the peak memory are those of ``bench.scaling`` (periodic cells at 0.1
atoms/Å^3, each backbone at its default size, float32, 2 threads); every trial is its own process,
with huge pages as the command line runs, the two ways alternating.
"""

from __future__ import annotations

import argparse
import json

from bench.common import HUGE_PAGES_ENV, alternating_trials, machine, write_section
from bench.scaling import measure

CONDITIONS = (("kept", ("0",), HUGE_PAGES_ENV), ("recomputed", ("1",), HUGE_PAGES_ENV))  # recompute flag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--backbones", nargs="+", default=["schnet", "painn", "equiformer"])
    parser.add_argument("--trial", nargs=3, help=argparse.SUPPRESS)  # backbone, size, recompute 0|1
    args = parser.parse_args()
    if args.trial:
        name, size, recompute = args.trial
        print(json.dumps(measure(name, True, int(size), recompute == "1")))
        return 0
    rows = [
        "| backbone | atoms | peak memory (MB), kept / recomputed | recomputed / kept "
        "| ms per call, kept / recomputed | recomputed / kept |",
        "|---|---|---|---|---|---|",
    ]
    count = 0
    for name in args.backbones:
        for size in args.sizes:
            cases = alternating_trials("bench.low_memory", CONDITIONS, count, name, str(size))
            count += 1
            kept, recomputed = cases["kept"], cases["recomputed"]
            rows.append(
                f"| {name} | {size:,} | {kept['peak_mb']:,.0f} / {recomputed['peak_mb']:,.0f} "
                f"| {recomputed['peak_mb'] / kept['peak_mb']:.2f} "
                f"| {kept['call'] * 1e3:,.0f} / {recomputed['call'] * 1e3:,.0f} "
                f"| {recomputed['call'] / kept['call']:.2f} |"
            )
            print(rows[-1], flush=True)
    lines = [
        "## Memory for large systems: block activations kept or recomputed",
        "",
        f"`python -m bench.low_memory`; {machine()}; float32; each backbone at its default size;",
        "periodic cells of H, C, O at 0.1 atoms/Å^3 (as `scaling`). One call = neighbour list + model +",
        "autograd forces; median of 5 calls (3 over 0.6 s, 1 over 15 s) after a first one; peak memory:",
        "the peak resident size during the calls minus the size before them. 'Recomputed': each block's",
        "activations recomputed in the force backward (`DensCalculator(..., low_memory=True)`). Each",
        "case a process, with huge pages (as the command line runs), the two ways alternating; one run.",
        "",
        *rows,
    ]
    write_section("low-memory", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
