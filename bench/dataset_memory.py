"""Does pretraining memory stay flat as the data set grows? Peak resident memory and step rate of the
same pretraining run on memory-mapped conformation stores of 10^3 to 10^6 aspirin conformations.

    python -m bench.dataset_memory [--sizes 1000 100000 1000000] [--steps 100]

Each store holds aspirin (rMD17 frames, or an RDKit conformer where ../shared/data is absent) with
every coordinate displaced by N(0, 0.05 Å), written as `sample --out DIR` writes them. Each run is
its own process: `run_pretrain` with SchNet at its default size, batch 32, ``--steps`` optimizer
steps, 64 validation structures; it reports its peak RSS (the whole process: Python, torch and
Lightning included) and its training steps per second after warm-up.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.common import (
    BATCH,
    ROOT,
    aspirin_frames,
    machine,
    peak_rss_mb,
    run_trial,
    runner_loop,
    write_section,
)

WORK = ROOT / "runs" / "bench" / "dataset_memory"


def make_store(size: int) -> Path:
    from dens_lightning.data.sampling import Sample
    from dens_lightning.data.store import is_store, write_store

    path = WORK / f"aspirin-{size}"
    if is_store(path):
        return path
    frames, source = aspirin_frames(1)
    numbers, reference = frames[0].numbers, frames[0].positions
    rng = np.random.default_rng(0)
    samples = (
        Sample(numbers, reference + rng.normal(0, 0.05, reference.shape), "aspirin", 0) for _ in range(size)
    )
    return write_store(path, samples, {"method": "perturb", "displacement": 0.05, "source": source})


def trial(store: Path, steps: int) -> dict:
    size = json.loads((store / "info.json").read_text())["structures"]
    overrides = [
        f"data.path={store}",
        f"data.split=[{size - 64},64,0]",
        f"data.batch_size={BATCH}",
        "model.name=schnet",
        f"trainer.max_steps={steps}",
    ]
    timer = runner_loop("pretrain", overrides, WORK / f"run-{store.name}", warmup=10)
    return {"structures": size, "peak_rss_mb": peak_rss_mb(), "steps_per_s": timer.throughput() / BATCH}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--trial", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(args.trial, args.steps)))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        store = make_store(size)
        disk = sum(f.stat().st_size for f in store.iterdir()) / 1e6
        result = json.loads(run_trial("bench.dataset_memory", str(store), "--steps", str(args.steps)))
        rows.append({**result, "disk_mb": disk})
        print(json.dumps(rows[-1]), flush=True)
    smallest = rows[0]["peak_rss_mb"]
    lines = [
        "## Pretraining memory against data set size (memory-mapped store)",
        "",
        f"`python -m bench.dataset_memory --steps {args.steps}`; {machine()}; SchNet default size, batch 32,",
        "aspirin conformations in a store written as `python -m dens_lightning sample --out DIR` writes one",
        "and read lazily through `data.path=DIR`. Peak RSS of the whole pretraining process.",
        "",
        "| conformations | store on disk (MB) | peak RSS (MB) | RSS / smallest | steps/s |",
        "|---|---|---|---|---|",
        *(
            f"| {r['structures']:,} | {r['disk_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / smallest:.2f} | {r['steps_per_s']:.1f} |"
            for r in rows
        ),
    ]
    write_section("dataset-memory", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
