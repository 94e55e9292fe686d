"""ASE calculator calls per second against schnetpack's ``SpkCalculator``, alone: the noisiest measure
of the side-by-side comparison (``peers``, where each trial measures it once, after a training run),
here with many short trials in alternating processes.

    .venv-bench/bin/python -m bench.calculator [--repeats 6] [--calls 300]

Each trial is a process that builds one calculator (SchNet or PaiNN at the sizes of ``peers``, the same
random weights on both sides: speed does not depend on training) and times ``--calls`` calls (energy +
forces) on one rMD17 aspirin moved a little before each call; median per trial. Ours eager
(``DensCalculator(model)``), ours compiled (``compile=True``: AOTInductor, compiled once before the
trials and read from its cache) and schnetpack (``MatScipyNeighborList``); the three rotate order from
one repeat to the next. Ratios are taken per repeat.
"""

from __future__ import annotations

import argparse
import json
import statistics

from bench.common import calls_per_second, machine, median_range, run_trial, write_section
from bench.peers import (
    CUTOFF,
    PAIRS,
    WORK,
    prepare_data,
    read_frames,
    schnetpack_calculator,
    schnetpack_model,
)

MODELS = ("SchNet", "PaiNN")
CODES = ("ours", "ours-compiled", "schnetpack")


def our_potential(model: str):
    import torch

    from dens_lightning.models.potential import Potential

    (name, hparams), _ = PAIRS[model]
    torch.manual_seed(0)
    return Potential.build(name, {"cutoff": CUTOFF, **hparams}).eval()


def calculator(code: str, model: str):
    """The calculator of ``code`` for ``model``."""
    if code == "schnetpack":
        import torch

        (name, hparams), _ = PAIRS[model]
        torch.manual_seed(0)
        return schnetpack_calculator(schnetpack_model(name, hparams), WORK / f"calculator-{name}.pt")
    from dens_lightning.calculator import DensCalculator

    return DensCalculator(our_potential(model), compile=code == "ours-compiled")


def trial(code: str, model: str, calls: int) -> dict:
    import torch

    torch.set_num_threads(2)
    return {"rate": calls_per_second(calculator(code, model), read_frames()[0], calls=calls)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--trial", nargs=3, help=argparse.SUPPRESS)  # code, model, calls
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], args.trial[1], int(args.trial[2]))))
        return 0
    if not (WORK / "aspirin.extxyz").exists():
        prepare_data()
    from dens_lightning.export import compiled

    for model in MODELS:  # compile into the cache once, outside the timed trials
        compiled(our_potential(model))
    rates: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        order = CODES[repeat % 3 :] + CODES[: repeat % 3]  # each code first, second, third in turn
        for model in MODELS:
            for code in order:
                rate = json.loads(run_trial("bench.calculator", code, model, str(args.calls)))["rate"]
                rates.setdefault((code, model), []).append(rate)
                print(model, code, f"{rate:.1f}", flush=True)
    rows = [
        "| model | ours, eager (calls/s) | ours, compiled | schnetpack | eager / schnetpack "
        "| compiled / schnetpack |",
        "|---|---|---|---|---|---|",
    ]
    summary = {}
    for model in MODELS:
        theirs = rates["schnetpack", model]
        cells, ratios = [], []
        for code in CODES:
            cells.append(median_range(rates[code, model], 0))
        for code in CODES[:2]:
            per_repeat = [ours / peer for ours, peer in zip(rates[code, model], theirs, strict=True)]
            ratios.append(median_range(per_repeat, 2))
            summary[code, model] = statistics.median(per_repeat)
        rows.append(f"| {model} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    lines = [
        "## ASE calculator against schnetpack's (alternating processes)",
        "",
        f"`python -m bench.calculator --repeats {args.repeats} --calls {args.calls}`; {machine()}; "
        "float32; one rMD17 aspirin (21 atoms), moved before each call.",
        "One process per trial and code (ours eager, ours compiled with `compile=True`, schnetpack's",
        "`SpkCalculator` with `MatScipyNeighborList`), the three in rotating order; each trial: median",
        f"of {args.calls} calls (energy + forces) after 5; cells: median (range) over the {args.repeats}",
        "repeats, ratios per repeat. Same sizes as the side-by-side comparison; untrained weights.",
        "",
        *rows,
    ]
    write_section("calculator", lines)
    print({f"{code} {model}": round(ratio, 2) for (code, model), ratio in summary.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
