"""What DeNS and pretraining cost per training step, against plain energy/force finetuning: the whole
Lightning loop through ``run_finetune`` / ``run_pretrain``, each backbone at its default size.

    python -m bench.stages [--repeats 2] [--backbones schnet painn equiformer]

Same data for every stage: aspirin (bench/common.py), batch 32, validation off. Stages: ``plain``
(energy + forces), ``dens`` (the same plus DeNS with the paper's MD17 settings: probability 0.25,
corrupt ratio 0.25, sigma 0.05 Å, force encoding), ``dens-every`` (DeNS on every structure,
probability 1: the most it can cost), ``pretrain`` (denoising, sigma 0.1 Å, every atom). Stages alternate
within each repeat; the ratios are taken per repeat against that repeat's plain run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import (
    BATCH,
    ROOT,
    alternating,
    aspirin_frames,
    device_name,
    loop_overrides,
    median_range,
    runner_loop,
    write_section,
)

WORK = ROOT / "runs" / "bench" / "stages"
FRAMES = 1000
STEPS = {"schnet": 40, "painn": 30, "equiformer": 15}  # timed steps after the warm-up
STAGES = {
    "plain": ("finetune", []),
    "dens": ("finetune", ["task.dens.enabled=true"]),
    "dens-every": ("finetune", ["task.dens.enabled=true", "task.dens.probability=1.0"]),
    "pretrain": ("pretrain", ["task.noise.sigma=0.1"]),
}


def run(stage: str, backbone: str, data: Path, device: str = "cpu") -> float:
    """Structures per second of ``stage`` with ``backbone`` on ``data``."""
    kind, extra = STAGES[stage]
    overrides = [*loop_overrides(data, FRAMES, backbone, STEPS[backbone]), *extra]
    return runner_loop(kind, overrides, WORK / f"{backbone}-{stage}", device=device).throughput()


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backbones", nargs="+", default=list(STEPS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the GPU table: section stages-gpu)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    WORK.mkdir(parents=True, exist_ok=True)
    frames, source = aspirin_frames(FRAMES)
    from ase.io import write

    data = WORK / "aspirin.extxyz"
    write(data, frames)
    rates: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for backbone in args.backbones:
            for stage in alternating(STAGES, repeat):
                rates.setdefault((backbone, stage), []).append(run(stage, backbone, data, args.device))
                print(
                    json.dumps(
                        {"backbone": backbone, "stage": stage, "structures_per_s": rates[backbone, stage][-1]}
                    ),
                    flush=True,
                )
    rows = [
        "| backbone | stage | structures/s (median, range) | step time / plain (median, range) |",
        "|---|---|---|---|",
    ]
    for backbone in args.backbones:
        plain = rates[backbone, "plain"]
        for stage in STAGES:
            values = rates[backbone, stage]
            ratios = [p / v for p, v in zip(plain, values, strict=True)]
            rows.append(f"| {backbone} | {stage} | {median_range(values)} | {median_range(ratios, 2)} |")
    gpu = args.device.startswith("cuda")
    command = f"python -m bench.stages --repeats {args.repeats}" + (f" --device {args.device}" if gpu else "")
    lines = [
        "## DeNS and pretraining against plain finetuning: whole training loop"
        + (", on a GPU" if gpu else ""),
        "",
        f"`{command}`; {device_name(args.device)}; float32; {FRAMES} structures of",
        f"{source}; batch {BATCH}; each backbone at its default size; `run_finetune` / `run_pretrain` as",
        "the CLI runs them (EMA, clipping, CSV log, checkpoints), validation off. A step-time ratio above 1",
        "means slower than plain finetuning. DeNS: the paper's MD17 settings (probability 0.25, corrupt",
        "ratio 0.25, sigma 0.05 Å, force encoding); dens-every: probability 1. Pretrain: sigma 0.1 Å, every",
        "atom, the backbone's noise head.",
        "",
        *rows,
    ]
    write_section("stages-gpu" if gpu else "stages", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
