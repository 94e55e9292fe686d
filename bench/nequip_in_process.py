"""`equiformer` at nequip's size against nequip, both in one process: rounds of training steps
alternate between the two, so the machine's drift within minutes (BENCHMARKS.md, Summary) falls on
both alike.

    .venv-bench/bin/python -m bench.nequip_in_process [--rounds 12] [--steps 5]

`bench.peers` runs each code in its own process, as it ships, minutes apart; this script is the
finer comparison of the model step alone. Same models, data and step as there (32 aspirins, float32,
2 threads, AdamW, neighbour list built beforehand); each round times ``--steps`` steps after one
untimed step; ratios are ours / nequip's per round. Both run with this package's malloc setting
(:mod:`dens_lightning.allocator`), which is per process.
"""

from __future__ import annotations

import argparse
import statistics

from bench.common import BATCH, alternating, device_name, median_range, our_step, timed, write_section
from bench.peers import CUTOFF, PAIRS, WORK, nequip_step, prepare_data, read_frames, versions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    args = parser.parse_args()
    import torch

    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.models.potential import Potential

    torch.set_num_threads(2)
    keep_freed_memory()
    if not (WORK / "aspirin.extxyz").exists():
        prepare_data()
    (name, hparams), _ = PAIRS["NequIP-sized"]
    torch.manual_seed(0)
    ours = our_step(Potential.build(name, {"cutoff": CUTOFF, **hparams}), read_frames()[:BATCH])
    theirs, _ = nequip_step(hparams, "cpu")  # sets torch's default dtype to float64 (nequip's global state)
    rates: dict[str, list[float]] = {"ours": [], "nequip": []}
    for round_ in range(args.rounds):
        for code, step in alternating([("ours", ours), ("nequip", theirs)], round_):
            median, _ = timed(step, args.steps, warmup=1)
            rates[code].append(BATCH / median)
    ratios = [a / b for a, b in zip(rates["ours"], rates["nequip"])]
    lines = [
        "## equiformer against nequip in one process (model step, interleaved rounds)",
        "",
        f"`.venv-bench/bin/python -m bench.nequip_in_process --rounds {args.rounds} --steps {args.steps}`;",
        f"{device_name('cpu')}; float32; {versions()}.",
        f"{args.rounds} rounds of {args.steps} timed steps each (after one untimed step), alternating",
        "which code goes first; cells: median (range) over the rounds of structures/s.",
        "",
        "| ours (`equiformer`) | nequip | ours / nequip |",
        "|---|---|---|",
        f"| {median_range(rates['ours'])} | {median_range(rates['nequip'])} "
        f"| {median_range(ratios, digits=2)} |",
    ]
    write_section("nequip-in-process", lines)
    print(f"ratio median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
