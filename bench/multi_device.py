"""End-to-end finetune throughput on 1 and 2 processes (DDP): ``python -m bench.multi_device``.

Runs ``python -m dens_lightning finetune`` on rMD17 aspirin (``../shared/data``) for a short and a
longer number of steps and divides the extra structures by the extra time, so start-up (imports, data
reading, splits) cancels out. On a GPU machine each process takes one GPU (NCCL); on a CPU machine
each takes ``threads / processes`` threads (gloo). The result replaces the multi-device section of
BENCHMARKS.md, which ``make bench`` keeps.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from bench.aspirin import ASPIRIN, ROOT, aspirin_overrides
from bench.common import write_section


def wall_time(processes: int, steps: int, batch: int, backbone: str, accelerator: str, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            sys.executable,
            "-m",
            "dens_lightning",
            "finetune",
            "--run-dir",
            f"{tmp}/run",
            "--no-progress",
        ]
        argv += aspirin_overrides(frames=1000, steps=steps, seed=0) + [f"data.batch_size={batch}"]
        argv += [
            f"model.name={backbone}",
            f"trainer.accelerator={accelerator}",
            f"trainer.devices={processes}",
        ]
        argv += ["trainer.limit_val_batches=0", "data.split=[1000,10,0]", "task.ema_decay=null"]
        if processes > 1:
            argv.append("trainer.strategy=ddp")
        env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // processes, 1))}
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=env, capture_output=True, cwd=ROOT)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["schnet", "painn"])
    parser.add_argument("--batch", type=int, default=16, help="structures per device and step")
    parser.add_argument("--steps", type=int, nargs=2, default=[10, 40])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if not ASPIRIN.exists():
        sys.exit(f"{ASPIRIN}: not found (the shared data sets are needed for this benchmark)")
    gpu = torch.cuda.is_available()
    accelerator = "gpu" if gpu else "cpu"
    threads = os.cpu_count() or 1
    device = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()} CPU"
    rows = ["| backbone | processes | batch per process | structures/s |", "|---|---|---|---|"]
    for backbone in args.backbones:
        for processes in args.processes:
            short, long = (
                wall_time(processes, s, args.batch, backbone, accelerator, threads) for s in args.steps
            )
            rate = (args.steps[1] - args.steps[0]) * args.batch * processes / (long - short)
            rows.append(f"| {backbone} | {processes} | {args.batch} | {rate:.0f} |")
            print(rows[-1], flush=True)
    command = "python -m bench.multi_device " + " ".join(sys.argv[1:])
    write_section(
        "multi-device",
        [
            "## Multi-device finetune throughput: whole training steps through the CLI (DDP)",
            "",
            f"`{command.strip()}` on {device} ({threads} cores), torch {torch.__version__}, rMD17 aspirin,",
            f"float32; (structures of {args.steps[1]} steps - of {args.steps[0]}) / (time difference).",
            "",
            *rows,
        ],
    )


if __name__ == "__main__":
    main()
