"""Does DeNS help, and does it need force encoding? rMD17 aspirin test errors without DeNS, with DeNS,
and with DeNS but no force encoding, at the same finetune budget and seeds.

    python bench/dens_aspirin.py [--out runs/dens_aspirin] [--backbones painn equiformer]
                                 [--frames 200] [--steps 600] [--seeds 0 1] [--arms plain dens ...]

Each run trains ``--frames`` frames of ../shared/data/rmd17_aspirin (50 validation and 800 test
frames, disjoint, the same for every arm of a seed) from scratch for ``--steps`` optimizer steps of
batch 16, each backbone at its default size. DeNS uses the paper's MD17 settings (probability 0.25,
corrupt ratio 0.25, sigma 0.05 Å, weight 5 decaying linearly to 0). Writes ``results.json`` and
prints a markdown table; finished runs are reused, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from aspirin import ASPIRIN, aspirin_overrides

from dens_lightning.config import load_config
from dens_lightning.runner import run_finetune

ARMS = {
    "plain": [],
    "dens": ["task.dens.enabled=true"],
    "dens_no_encoding": ["task.dens.enabled=true", "task.dens.force_encoding=false"],
}


def run(out: Path, backbone: str, arm: str, frames: int, steps: int, seed: int) -> dict:
    name = f"{backbone}-{arm}-{frames}-seed{seed}"
    run_dir = out / name
    result_file = run_dir / "test_metrics.json"
    if not result_file.exists():
        overrides = [f"model.name={backbone}", *aspirin_overrides(frames, steps, seed), *ARMS[arm]]
        start = time.time()
        run_finetune(load_config("finetune", overrides=overrides), run_dir, progress=False)
        (run_dir / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    wall = float((run_dir / "wall_seconds.txt").read_text())
    metrics = json.loads(result_file.read_text())
    return {"backbone": backbone, "arm": arm, "frames": frames, "seed": seed, "wall_s": wall} | metrics


def spread(values: list[float]) -> str:
    """Mean, then each seed's value."""
    return f"{statistics.mean(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})"


def table(rows: list[dict]) -> str:
    lines = [
        "| backbone | arm | energy MAE (meV) | force MAE (meV/Å) | seeds | wall time per run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        for arm in ARMS:
            group = [r for r in rows if r["backbone"] == backbone and r["arm"] == arm]
            if not group:
                continue
            energy = spread([r["energy_mae_meV"] for r in group])
            forces = spread([r["forces_mae_meV_per_A"] for r in group])
            seeds = ", ".join(str(r["seed"]) for r in group)
            wall = statistics.mean(r["wall_s"] for r in group)
            lines.append(f"| {backbone} | {arm} | {energy} | {forces} | {seeds} | {wall:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dens_aspirin"))
    parser.add_argument("--backbones", nargs="+", default=["painn", "equiformer"])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args()
    if not ASPIRIN.exists():
        print(f"{ASPIRIN}: not found (the shared data sets are not on this machine)", file=sys.stderr)
        return 1
    rows = []
    for backbone in args.backbones:
        for seed in args.seeds:  # seed-major, so a partial sweep already compares every arm
            for arm in args.arms:
                rows.append(run(args.out, backbone, arm, args.frames, args.steps, seed))
                print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
