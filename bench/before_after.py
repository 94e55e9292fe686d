"""Before and after: the same measurements on an earlier commit and on this checkout, interleaved.

    python -m bench.before_after [--before 1ebe492] [--repeats 3] [--section before-after] [--title T]

The earlier commit is checked out with ``git worktree`` under runs/bench/before/ for the run (removed
at its end, also when it is interrupted); each trial is a
process importing dens_lightning from one checkout or the other, alternating. Measured: the model
training step (forward + autograd forces + backward + AdamW, 32 aspirins, neighbour list built
beforehand) of each backbone at its default size and of equiformer at nequip's size; the ASE
calculator on one aspirin; one energy + forces evaluation of a 1,000-atom periodic cell. Each
checkout runs as its entry points do (this one tunes malloc, :mod:`dens_lightning.allocator`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from bench.common import (
    BATCH,
    ROOT,
    alternating,
    aspirin_frames,
    calls_per_second,
    machine,
    median_range,
    our_step,
    run_trial,
    timed,
    write_section,
)

WORK = ROOT / "runs" / "bench" / "before"
TITLE = "optimisation"
CASES = {
    "schnet step": ("step", "schnet", {}),
    "painn step": ("step", "painn", {}),
    "equiformer step": ("step", "equiformer", {}),
    "equiformer (nequip size) step": ("step", "equiformer", {"lmax": 1, "num_channels": 32, "num_layers": 3}),
    "schnet calculator": ("calculator", "schnet", {}),
    "painn calculator": ("calculator", "painn", {}),
    "painn 1,000-atom cell": ("cell", "painn", {}),
}
UNITS = {"step": "structures/s", "calculator": "calls/s", "cell": "ms"}


def trial(kind: str, name: str, hparams: dict) -> float:
    import torch

    import dens_lightning
    from dens_lightning.models.potential import Potential

    if not Path(dens_lightning.__file__).resolve().is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"dens_lightning came from {dens_lightning.__file__}, not from {Path.cwd()}")

    torch.set_num_threads(2)
    try:  # what this checkout's entry points do
        from dens_lightning.allocator import keep_freed_memory

        keep_freed_memory()
    except ImportError:
        pass
    torch.manual_seed(0)
    potential = Potential.build(name, hparams)
    frames, _ = aspirin_frames(BATCH)
    if kind == "step":
        median, _ = timed(our_step(potential, frames), 10)
        return BATCH / median
    if kind == "calculator":
        from dens_lightning.calculator import DensCalculator

        return calls_per_second(DensCalculator(potential), frames[0])
    from bench.scaling import system
    from dens_lightning.data.atoms import atoms_graph

    graph = atoms_graph(system(1000, periodic=True))
    potential.eval()
    median, _ = timed(lambda: potential(graph, compute_forces=True), 3, warmup=1)
    return median * 1e3


def measure(before: Path, repeats: int) -> dict[tuple[str, str], list[float]]:
    """Every case's values per checkout ("before", "after"), trials alternating between them."""
    values: dict[tuple[str, str], list[float]] = {}
    for repeat in range(repeats):
        for case in CASES:
            for label, checkout in alternating([("before", before), ("after", ROOT)], repeat):
                # dens_lightning from the checkout (cwd, PYTHONPATH), bench from this one (run_trial puts
                # ROOT after it): an earlier bench/ without __init__.py is no package, so this one wins
                env = {"PYTHONPATH": str(checkout)}
                value = float(run_trial("bench.before_after", case, cwd=checkout, env=env))
                values.setdefault((case, label), []).append(value)
                print(json.dumps({"case": case, "checkout": label, "value": value}), flush=True)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1ebe492")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--section", default="before-after", help="the BENCHMARKS.md section to write")
    parser.add_argument("--title", default=TITLE, help="what the section's title names")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(trial(*CASES[args.trial]))
        return 0
    before = WORK / args.before
    if before.exists():  # left by an interrupted run
        shutil.rmtree(before)
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=ROOT, check=True)
    try:
        values = measure(before, args.repeats)
    finally:  # the checkout is only for this run: unregister it
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    rows = ["| measurement | unit | before | after | after / before |", "|---|---|---|---|---|"]
    for case, (kind, _, _) in CASES.items():
        old, new = values[case, "before"], values[case, "after"]
        gain = [b / a if kind == "cell" else a / b for a, b in zip(new, old, strict=True)]  # > 1: faster
        rows.append(
            f"| {case} | {UNITS[kind]} | {median_range(old, 1)} | {median_range(new, 1)} | "
            f"{median_range(gain, 2)}x faster |"
        )
    lines = [
        f"## Before and after {args.title}",
        "",
        f"`python -m bench.before_after --before {args.before} --repeats {args.repeats}"
        + ("" if args.section == "before-after" else f" --section {args.section}")
        + ("" if args.title == TITLE else f" --title '{args.title}'")
        + f"`; {machine()};",
        f"before: commit {args.before}, after: {head.stdout.strip()} (this file's commit or its parent).",
        "Interleaved trials, one process each; median (range). Steps: 32 aspirins, neighbour list built",
        "beforehand, each backbone at its default size. Calculator: one aspirin. Cell: 1,000 atoms at",
        "0.1 atoms/Å^3 in a periodic cube, one energy + forces evaluation (ms, lower is better).",
        "",
        *rows,
    ]
    write_section(args.section, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
