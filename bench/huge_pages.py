"""Training steps on batches whose edge tensors pass glibc's 32 MB mmap threshold, with and without
transparent huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, which the command line sets by
restarting itself: :mod:`dens_lightning.allocator`).

    python -m bench.huge_pages [--repeats 3]

Each trial is a process: the model step (forward + autograd forces + backward + AdamW, neighbour
list built beforehand) on a batch of rMD17 aspirins, float32, 2 threads, malloc tuned as training
tunes it; trials with and without alternate. Reported: structures/s and page faults per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics

from bench.common import (
    MALLOC_CONDITIONS,
    alternating_trials,
    machine,
    median_range,
    our_step,
    timed,
    write_section,
)
from bench.peers import CUTOFF, PAIRS, WORK, prepare_data, read_frames

CASES = {  # model (peers' sizes), batch: edge tensors above 32 MB for PaiNN and equiformer
    "PaiNN": 128,
    "NequIP-sized": 64,
    "SchNet": 256,
}


def trial(model: str, batch: int) -> dict:
    import torch

    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.models.potential import Potential

    torch.set_num_threads(2)
    keep_freed_memory()
    (name, hparams), _ = PAIRS[model]
    torch.manual_seed(0)
    step = our_step(Potential.build(name, {"cutoff": CUTOFF, **hparams}), read_frames()[:batch])
    step()  # the first step maps and fills everything once
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    median, _ = timed(step, 6, warmup=1)
    per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 7
    return {"rate": batch / median, "faults": per_step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trial", nargs=2, help=argparse.SUPPRESS)  # model, batch
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial[0], int(args.trial[1]))))
        return 0
    if not (WORK / "aspirin.extxyz").exists():
        prepare_data()
    import torch

    torch.set_num_threads(2)  # as every trial runs (the machine line says so)
    results: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for model, batch in CASES.items():
            for label, result in alternating_trials(
                "bench.huge_pages", MALLOC_CONDITIONS, repeat, model, str(batch)
            ).items():
                results.setdefault((model, label), []).append(result)
                print(model, batch, label, result, flush=True)
    rows = [
        "| model | batch | structures/s, plain | structures/s, huge pages | huge / plain "
        "| page faults per step, plain / huge pages |",
        "|---|---|---|---|---|---|",
    ]
    for model, batch in CASES.items():
        plain, huge = results[model, "plain"], results[model, "huge"]
        ratios = [h["rate"] / p["rate"] for p, h in zip(plain, huge, strict=True)]
        faults = [statistics.median(r["faults"] for r in runs) for runs in (plain, huge)]
        rows.append(
            f"| {model} | {batch} | {median_range([r['rate'] for r in plain], 1)} "
            f"| {median_range([r['rate'] for r in huge], 1)} | {median_range(ratios, 2)} "
            f"| {faults[0]:,.0f} / {faults[1]:,.0f} |"
        )
    lines = [
        "## Huge pages: training steps on larger batches",
        "",
        f"`python -m bench.huge_pages --repeats {args.repeats}`; {machine()}; float32; rMD17 aspirin.",
        "One process per trial, with and without `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` alternating;",
        "model step (forward + autograd forces + backward + AdamW), neighbour list built beforehand,",
        "median of 6 steps after 2; cells: median (range) over the repeats. Models at the sizes of the",
        "side-by-side comparison; batches large enough that edge tensors pass malloc's 32 MB threshold",
        "(SchNet's [E, 128] tensors reach ~40 MB only at batch 256).",
        "",
        *rows,
    ]
    write_section("huge-pages", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
