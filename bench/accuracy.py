"""Time to accuracy: the test error a training run reaches within a wall-clock budget.

    python -m bench.accuracy [--budget 1200] [--data rmd17_ethanol 3bpa] [--codes ...]

One training run per code and data set, on 2 CPU threads, float32, stopped when its training time
reaches the budget; a checkpoint is written when it passes 1/8, 1/4, 1/2 and all of the budget
(2.5, 5, 10 and 20 minutes by default). Training time is the run's wall time less its validation
passes and these checkpoint writes. Afterwards every checkpoint is evaluated on the test set (its
time not counted). Section ``accuracy`` of BENCHMARKS.md and ``docs/experiments/time_to_accuracy.png``
(test force MAE against training time, one line per code). Long: ``make bench-accuracy`` runs it,
``make bench`` does not.

Data: rMD17 ethanol (``train.xyz``: 950 train, 50 validation; test: all 1,000 frames of
``test.xyz``) and 3BPA (``train_300K.xyz``: 450 / 50; test: ``train_mixedT.xyz``), in ``../shared/data``.
Codes: this package's backbones at their default sizes with the package's finetune defaults,
except the learning-rate schedule: ``plateau`` (the budget fixes no step count for a cosine), and
PaiNN finetuned from ``zoo:painn-xtb-small``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import lightning

from bench.common import ROOT, machine, run_trial, write_section

SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "bench" / "accuracy"
PLOT = ROOT / "docs" / "experiments" / "time_to_accuracy.png"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # of the budget: where checkpoints are written


@dataclass(frozen=True)
class DataSet:
    train: str  # relative to ../shared/data
    test: str
    train_size: int
    validation: int = 50

    def overrides(self) -> list[str]:
        split = f"[{self.train_size},{self.validation},0]"
        return [f"data.path={SHARED / self.train}", f"data.split={split}", "data.batch_size=16"]


DATA = {
    "rmd17_ethanol": DataSet("rmd17_ethanol/train.xyz", "rmd17_ethanol/test.xyz", 950),
    "3bpa": DataSet("3bpa/train_300K.xyz", "3bpa/train_mixedT.xyz", 450),
}
# code name -> (model overrides, pretrained start or None)
CODES = {
    "ours-schnet": (["model.name=schnet"], None),
    "ours-painn": (["model.name=painn"], None),
    "ours-equiformer": (["model.name=equiformer"], None),
    "ours-painn-zoo": ([], "zoo:painn-xtb-small"),
}
BUDGETED = [
    "task.scheduler=plateau",
    "trainer.max_steps=-1",
    "trainer.max_epochs=-1",
    "trainer.precision=32-true",
]


class WallClockCheckpoints(lightning.Callback):
    """Writes ``<seconds>s.ckpt`` in ``directory`` when the training time passes each of ``marks``
    (seconds) and stops the run at the last. Training time: wall time since training started, less
    validation passes and these writes."""

    def __init__(self, marks: list[float], directory: Path):
        self.pending = sorted(marks)
        self.directory = Path(directory)
        self.written: list[dict] = []
        self.start = self.excluded = self.paused = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.excluded = time.perf_counter(), 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self.paused = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.excluded += time.perf_counter() - self.paused

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        elapsed = self.training_seconds()
        while self.pending and elapsed >= self.pending[0]:
            mark = self.pending.pop(0)
            began = time.perf_counter()
            path = self.directory / f"{mark:g}s.ckpt"
            trainer.save_checkpoint(path)
            self.excluded += time.perf_counter() - began
            self.written.append({"seconds": mark, "training_seconds": elapsed, "step": trainer.global_step})
        if not self.pending:
            trainer.should_stop = True


def evaluate_checkpoint(path: Path, test_file: Path) -> dict:
    """Test errors of the potential in a finetune checkpoint (its EMA weights, as the run saves)."""
    from dens_lightning.artifacts import load_checkpoint
    from dens_lightning.data.readers import ReadOptions, read_structures
    from dens_lightning.evaluation import evaluate_structures
    from dens_lightning.tasks.finetune import EnergyForceTask

    checkpoint = load_checkpoint(path)
    task = EnergyForceTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(task.current_state(checkpoint["state_dict"]))
    errors, _ = evaluate_structures(task.potential.eval(), read_structures(test_file, ReadOptions()), 64)
    return errors


def trial(code: str, data: str, budget: float) -> dict:
    """One budgeted training run of ``code`` on ``data``, then its checkpoints on the test set."""
    import torch

    from dens_lightning.runner import run_finetune
    from dens_lightning.warm_start import finetune_config, pretrained_backbone

    torch.set_num_threads(2)
    model, start = CODES[code]
    dataset = DATA[data]
    run_dir = WORK / data / code
    marks = [fraction * budget for fraction in FRACTIONS]
    clock = WallClockCheckpoints(marks, run_dir / "timed")
    source = pretrained_backbone(start) if start else None
    overrides = [*dataset.overrides(), *BUDGETED, *([] if source else model)]
    config = finetune_config(source, overrides=overrides)
    began = time.perf_counter()
    run_finetune(config, run_dir, from_path=source, progress=False, callbacks=[clock])
    wall = time.perf_counter() - began
    points = []
    for written in clock.written:
        errors = evaluate_checkpoint(
            run_dir / "timed" / f"{written['seconds']:g}s.ckpt", SHARED / dataset.test
        )
        points.append({**written, **errors})
    return {"code": code, "data": data, "budget": budget, "wall_seconds": wall, "points": points}


def table(results: list[dict], data: str) -> list[str]:
    """Markdown: test force and energy MAE of each code at each checkpoint time."""
    runs = [r for r in results if r["data"] == data]
    if not runs:
        return []
    minutes = [point["seconds"] / 60 for point in runs[0]["points"]]
    header = " | ".join(f"{m:g} min" for m in minutes)
    lines = [f"| code | {header} |", "|---|" + "---|" * len(minutes)]
    for run in runs:
        cells = [
            f"{p['forces_mae_meV_per_A']:.1f} / {p['energy_mae_meV']:.1f} ({p['step']:,} steps)"
            for p in run["points"]
        ]
        lines.append(f"| {run['code']} | " + " | ".join(cells) + " |")
    return lines


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["data"] for r in results})
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for axis, data in zip(axes[0], names, strict=True):
        for run in (r for r in results if r["data"] == data):
            points = run["points"]
            axis.plot([p["seconds"] / 60 for p in points], [p["forces_mae_meV_per_A"] for p in points], "o-")
            axis.lines[-1].set_label(run["code"])
        axis.set(xscale="log", yscale="log", xlabel="training time (min)", ylabel="test force MAE (meV/Å)")
        axis.set_title(data)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds of training per run")
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--codes", nargs="+", choices=list(CODES), default=list(CODES))
    parser.add_argument("--trial", nargs=3, metavar=("CODE", "DATA", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        code, data, budget = args.trial
        print(json.dumps(trial(code, data, float(budget))))
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for data in args.data:
        for code in args.codes:
            results.append(json.loads(run_trial("bench.accuracy", code, data, str(args.budget))))
            print(json.dumps(results[-1]), flush=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, PLOT)
    lines = [
        "## Time to accuracy",
        "",
        f"`.venv-bench/bin/python -m bench.accuracy --budget {args.budget:g}` (`make bench-accuracy`);",
        f"{machine()}; 2 threads; float32. One run per code; checkpoints at the training times shown",
        "(validation and checkpoint writing not counted), each evaluated on the test set afterwards.",
        "Cells: test force MAE (meV/Å) / energy MAE (meV) (optimizer steps by then).",
        "",
        f"![time to accuracy]({PLOT.relative_to(ROOT)})",
    ]
    for data in args.data:
        dataset = DATA[data]
        lines += [
            "",
            f"**{data}**: {dataset.train_size} training and {dataset.validation} validation structures of "
            f"`{dataset.train}`; test `{dataset.test}`.",
            "",
            *table(results, data),
        ]
    write_section("accuracy", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
