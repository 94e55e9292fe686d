"""Where the wall time of a whole training run goes: py-spy samples of ``python -m dens_lightning``
(finetune, finetune with DeNS, pretrain) on rMD17 aspirin, grouped by what each sample was doing.

    .venv-bench/bin/python -m bench.loop_profile [--steps 300]

py-spy (installed by ``make bench-install``) samples the Python stack at 200 Hz. A sample is counted
under the deepest of the groups below that its stack is in, so nested groups do not count twice. The
command line restarts itself once with huge pages (``exec``, which py-spy cannot follow), so the runs
set ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` themselves: the same setting, no restart.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import BATCH, HUGE_PAGES_ENV, ROOT, machine, trial_environment, write_section
from bench.peers import CUTOFF, PAIRS, WORK, prepare_data

# group -> a frame (py-spy's "function (file:line)") that puts a sample in it
GROUPS = {
    "model forward and losses": r"^_training_step \(lightning",
    "backward": r"^backward_fn \(lightning",
    "optimizer update": r"^step \(torch/optim/",
    "data (reading, collation, neighbour lists)": r"^__next__ \(lightning/pytorch/loops/fetchers",
    "logging": r"^log(_dict)? \(lightning|^log_parts \(dens_lightning",
    "callbacks (EMA, timing, checkpoints)": r"^_call_callback_hooks \(lightning",
    "rest of the training loop": r"^run \(lightning/pytorch/loops/fit_loop",
    "imports": r"^_find_and_load \(",
}
LOOP = [name for name in GROUPS if name != "imports"]
RUNS = {  # label -> stage, overrides beyond the data and the model's size
    "SchNet finetune": ("finetune", ["model.name=schnet"]),
    "SchNet finetune, DeNS": ("finetune", ["model.name=schnet", "task.dens.enabled=true"]),
    "PaiNN finetune": ("finetune", ["model.name=painn"]),
    "SchNet pretrain": ("pretrain", ["model.name=schnet"]),
}
STEP_SCALE = {"PaiNN finetune": 3}  # PaiNN steps are ~3x longer: a third of the steps


def group_samples(raw: str) -> dict[str, int]:
    """Samples per group (and 'other') from py-spy's raw output: one ``frame;frame;... count`` line
    per distinct stack, outermost frame first."""
    patterns = {name: re.compile(pattern) for name, pattern in GROUPS.items()}
    counts = dict.fromkeys([*GROUPS, "other"], 0)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        group, depth = "other", -1
        for at, frame in enumerate(stack.split(";")):
            for name, pattern in patterns.items():
                if at > depth and pattern.search(frame):
                    group, depth = name, at
        counts[group] += int(count)
    return counts


def run_overrides(stage: str, backbone_overrides: list[str]) -> list[str]:
    """The data, the batch and the model at the side-by-side sizes (SchNet's and PaiNN's widths,
    interactions and Gaussians agree; SchNet also has its filters)."""
    hparams = PAIRS["SchNet"][0][1]
    sizes = ["hidden_channels", "num_interactions", "num_rbf"]
    if "model.name=schnet" in backbone_overrides:
        sizes.append("num_filters")
    split = "[950,50,0]" if stage == "finetune" else "[950,50]"
    return [
        f"data.path={WORK / 'aspirin.extxyz'}",
        f"data.split={split}",
        f"data.batch_size={BATCH}",
        f"model.cutoff={CUTOFF}",
        *(f"model.{name}={hparams[name]}" for name in sizes),
        *backbone_overrides,
    ]


def profile(label: str, steps: int, directory: Path) -> dict[str, int]:
    stage, overrides = RUNS[label]
    raw = directory / "samples.txt"
    command = [
        str(Path(sys.executable).with_name("py-spy")), "record", "--rate", "200", "--format", "raw",
        "--output", str(raw), "--", sys.executable, "-m", "dens_lightning", stage, "--no-progress",
        "--run-dir", str(directory / "run"), *run_overrides(stage, overrides),
        f"trainer.max_steps={steps}", "trainer.limit_val_batches=0",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env=trial_environment(HUGE_PAGES_ENV), capture_output=True, text=True
    )
    if done.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy of {label} failed:\n{done.stderr[-3000:]}")
    return group_samples(raw.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if not (WORK / "aspirin.extxyz").exists():
        prepare_data()
    outside = ["imports", "setup and saving"]
    header = f"| run | steps | {' | '.join(LOOP)} | {' | '.join(outside)} (of the process) |"
    rows = [header, "|---" * (len(LOOP) + 4) + "|"]
    for label in RUNS:
        steps = args.steps // STEP_SCALE.get(label, 1)
        with tempfile.TemporaryDirectory() as directory:
            counts = profile(label, steps, Path(directory))
        print(label, counts, flush=True)
        loop = sum(counts[name] for name in LOOP)
        shares = [f"{100 * counts[name] / loop:.1f} %" for name in LOOP]
        shares += [f"{100 * counts[name] / sum(counts.values()):.0f} %" for name in ("imports", "other")]
        rows.append(f"| {label} | {steps} | {' | '.join(shares)} |")
    lines = [
        "## Where a training run's time goes (py-spy)",
        "",
        f"`python -m bench.loop_profile --steps {args.steps}`; {machine()}; float32; rMD17 aspirin, batch "
        f"{BATCH},",
        "SchNet and PaiNN at the side-by-side sizes, validation off. `py-spy record --rate 200` of the",
        "command line; each sample in the deepest group its Python stack is in. Shares of the training loop",
        "(Lightning's fit loop), except the last two: shares of the whole process (imports; setup, reading",
        "the data and saving the model). 'Model forward and losses'",
        "includes the DeNS corruption and force encoding, and pretraining's corruption and neighbour lists",
        "at the noisy positions; 'backward' is the loss's backward (the double backward of force training).",
        "",
        *rows,
    ]
    write_section("loop-profile", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
