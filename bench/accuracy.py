"""Time to accuracy: the test error each training code reaches within the same wall-clock budget.

    python -m bench.accuracy [--budget 1200] [--data rmd17_ethanol 3bpa] [--codes ...]

One training run per code and data set, on 2 CPU threads, float32, stopped when its training time
reaches the budget; a snapshot of the model is written when it passes 1/8, 1/4, 1/2 and all of the
budget (2.5, 5, 10 and 20 minutes by default). Training time runs from the first training step
(Lightning's ``on_train_start``; MACE: its first step), so reading the data and fitting statistics
before it are not counted, and leaves out validation passes and these writes. Afterwards every
snapshot is tested (not timed): through the code's own ASE calculator, MACE's in batches by
``mace_eval_configs``, the errors computed alike for every code (:mod:`bench.timed_training`).
Section ``accuracy-<data>`` of BENCHMARKS.md and ``docs/experiments/time_to_accuracy_<data>.png``
(test force MAE against training time, one line per code). Long: ``make bench-accuracy`` runs it,
``make bench`` does not.

Data: rMD17 ethanol (950 training and 50 validation frames of ``train.xyz``, test: all 1,000 frames
of ``test.xyz``) and 3BPA (450 / 50 of ``train_300K.xyz``; test ``train_mixedT.xyz``), from
``../shared/data``, split once with a fixed seed and written as files every code reads.

Codes: this package's backbones at their default sizes with the finetune defaults except the
learning-rate schedule (``plateau``: a budget fixes no step count for the cosine), PaiNN in
batches of 8, PaiNN from ``zoo:painn-xtb``, and PaiNN with DeNS (its defaults with a constant
noise weight, for the same reason); nequip and schnetpack (:mod:`bench.accuracy_peers`) and MACE
(:mod:`bench.accuracy_mace`, in ``.venv-mace``) at their own documented settings.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.accuracy_peers import Files, nequip_trial, schnetpack_trial
from bench.common import ROOT, machine, run_trial, write_section
from bench.timed_training import snapshot_name, wall_clock_callback

SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "runs" / "bench" / "accuracy"
MACE_PY = ROOT / ".venv-mace" / "bin" / "python"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # of the budget: where snapshots are written


@dataclass(frozen=True)
class DataSet:
    train: str  # relative to ../shared/data
    test: str
    isolated: str  # isolated-atom energies
    train_size: int
    validation: int = 50


DATA = {
    "rmd17_ethanol": DataSet(
        "rmd17_ethanol/train.xyz", "rmd17_ethanol/test.xyz", "rmd17_ethanol/isolated_atoms.xyz", 950
    ),
    "3bpa": DataSet("3bpa/train_300K.xyz", "3bpa/train_mixedT.xyz", "3bpa/iso_atoms.xyz", 450),
}
# ours: code name -> (model overrides, pretrained start or None)
OURS = {
    "ours-schnet": (["model.name=schnet"], None),
    "ours-painn": (["model.name=painn"], None),
    # batches of 8, as the rMD17 references train (Equiformer 8; nequip and MACE 5)
    "ours-painn-batch8": (["model.name=painn", "data.batch_size=8"], None),
    # the same with the ZBL repulsion inside the covalent radii, for MD stability
    "ours-painn-batch8-zbl": (
        ["model.name=painn", "data.batch_size=8", "model.zbl=true", "model.zbl_data_switch=null"],
        None,
    ),
    # ... switched off at 0.75 of the radii sum, below every bond length in the training and test files
    "ours-painn-batch8-zbl75": (
        [
            "model.name=painn",
            "data.batch_size=8",
            "model.zbl=true",
            "model.zbl_switch=0.75",
            "model.zbl_data_switch=null",
        ],
        None,
    ),
    # ... switched off per element pair at 0.9 of its shortest distance in the training split
    "ours-painn-batch8-zbldata": (
        ["model.name=painn", "data.batch_size=8", "model.zbl=true", "model.zbl_data_switch=0.9"],
        None,
    ),
    "ours-equiformer": (["model.name=equiformer"], None),
    "ours-painn-zoo": ([], "zoo:painn-xtb"),
    # DeNS at its defaults, but a constant noise weight: a budget fixes no step count for the decay
    "ours-painn-dens": (["model.name=painn", "task.dens.enabled=true", "task.dens.decay=none"], None),
}
PEERS = {
    "nequip": nequip_trial,
    "schnetpack-painn": schnetpack_trial,
    "schnetpack-schnet": partial(schnetpack_trial, representation="schnet"),
}
CODES = [*OURS, *PEERS, "mace"]
BUDGETED = [
    "task.scheduler=plateau",
    "trainer.max_steps=-1",
    "trainer.max_epochs=-1",
    "trainer.precision=32-true",
]


def prepare(data: str) -> Files:
    """The data set's train and validation files (a seeded split, written once) and its test file."""
    import numpy as np
    from ase.io import read, write

    dataset, folder = DATA[data], WORK / data
    files = Files(
        folder / "train.extxyz", folder / "val.extxyz", SHARED / dataset.test, [], SHARED / dataset.isolated
    )
    frames = read(SHARED / dataset.train, ":")
    symbols = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    files.symbols = symbols
    if not files.val.exists():
        folder.mkdir(parents=True, exist_ok=True)
        order = np.random.default_rng(0).permutation(len(frames))
        write(files.train, [frames[i] for i in order[: dataset.train_size]])
        write(
            files.val,
            [frames[i] for i in order[dataset.train_size : dataset.train_size + dataset.validation]],
        )
    return files


def our_calculator(path: Path):
    """:class:`~dens_lightning.calculator.DensCalculator` of the potential in one of our finetune
    checkpoints (its EMA weights)."""
    from dens_lightning.artifacts import load_checkpoint
    from dens_lightning.calculator import DensCalculator
    from dens_lightning.tasks.finetune import EnergyForceTask

    checkpoint = load_checkpoint(path)
    task = EnergyForceTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(task.current_state(checkpoint["state_dict"]))
    return DensCalculator(task.potential.eval())


def evaluate_checkpoint(path: Path, frames: list) -> dict:
    """Test errors of the potential in one of our finetune checkpoints (:func:`our_calculator`)."""
    from bench.timed_training import calculator_errors

    return calculator_errors(our_calculator(path), frames)


def ours_trial(code: str, files: Files, marks: list[float], run_dir: Path, extra: list[str]) -> list[dict]:
    import lightning
    from ase.io import read

    from dens_lightning.runner import run_finetune
    from dens_lightning.warm_start import finetune_config, pretrained_backbone

    model, start = OURS[code]
    clock = wall_clock_callback(lightning.Callback, marks, run_dir / "timed")
    source = pretrained_backbone(start) if start else None
    data = [
        f"data.train={files.train}",
        f"data.val={files.val}",
        "data.split=[1.0,0,0]",
        "data.batch_size=16",
    ]
    overrides = [*data, *BUDGETED, *([] if source else model), *extra]
    config = finetune_config(source, overrides=overrides)
    run_finetune(config, run_dir, from_path=source, progress=False, callbacks=[clock])
    frames = read(files.test, ":")
    return [
        {
            **point,
            **evaluate_checkpoint(run_dir / "timed" / f"{snapshot_name(point['seconds'])}.ckpt", frames),
        }
        for point in clock.written
    ]


def trial(code: str, data: str, budget: float, variant: str = "", extra: list[str] | None = None) -> dict:
    """One budgeted training run of ``code`` on ``data``, then its snapshots on the test set; a
    ``variant`` of one of ours runs with the config overrides ``extra``."""
    import torch

    torch.set_num_threads(2)
    files, marks = prepare(data), [fraction * budget for fraction in FRACTIONS]
    run_dir = WORK / data / label(code, variant)
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted run starts over
    runner = PEERS.get(code) or (lambda *args: ours_trial(code, *args, extra or []))
    points = runner(files, marks, run_dir)
    result = {"code": label(code, variant), "data": data, "budget": budget, "points": points}
    return {**result, "overrides": extra} if variant else result


def label(code: str, variant: str) -> str:
    return f"{code}-{variant}" if variant else code


def mace_trial(data: str, budget: float) -> dict:
    files = prepare(data)
    marks = ",".join(f"{fraction * budget:g}" for fraction in FRACTIONS)
    arguments = [
        str(files.train),
        str(files.val),
        str(files.test),
        str(files.isolated),
        marks,
        str(WORK / data / "mace"),
    ]
    points = json.loads(run_trial("bench.accuracy_mace", *arguments, python=MACE_PY))
    return {"code": "mace", "data": data, "budget": budget, "points": points}


def table(results: list[dict], data: str) -> list[str]:
    """Markdown: test force and energy MAE of each code at each snapshot time."""
    runs = [r for r in results if r["data"] == data and r["points"]]
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


def plot(results: list[dict], path: Path, data: str) -> None:
    """Test force MAE against training time, log-log, one line per code."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for run in results:
        points = run["points"]
        minutes = [p["seconds"] / 60 for p in points]
        axis.plot(minutes, [p["forces_mae_meV_per_A"] for p in points], "o-", label=run["code"])
    axis.set(
        xscale="log", yscale="log", xlabel="training time (min)", ylabel="test force MAE (meV/Å)", title=data
    )
    if results:  # ticks at the snapshot times, plain numbers on both axes
        axis.set_xticks([fraction * results[0]["budget"] / 60 for fraction in FRACTIONS])
    plain = matplotlib.ticker.FormatStrFormatter("%g")
    axis.xaxis.set_major_formatter(plain)
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.yaxis.set_major_formatter(plain)
    axis.yaxis.set_minor_formatter(plain)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="seconds of training per run")
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--codes", nargs="+", choices=CODES, default=CODES)
    parser.add_argument(
        "--variant", default="", help="name of a recipe study of our codes (not in the table)"
    )
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="the variant's overrides")
    # CODE DATA BUDGET [VARIANT KEY=VALUE ...]: one trial, in its own process
    parser.add_argument("--trial", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if bool(args.variant) != bool(args.set) or (args.variant and set(args.codes) - set(OURS)):
        parser.error("--variant NAME goes with --set KEY=VALUE ..., for this package's codes only")
    if args.trial:
        code, data, budget, *variant = args.trial
        print(json.dumps(trial(code, data, float(budget), *(variant[:1] or [""]), variant[1:])))
        return 0
    for data in args.data:
        for code in args.codes:
            if finished(label(code, args.variant), data, args.budget) is not None:
                continue
            try:
                if code == "mace":
                    result = mace_trial(data, args.budget)
                else:
                    result = run_code(code, data, args.budget, args.variant, args.set)
            except RuntimeError as error:  # one code failing leaves the others to run
                print(f"{code} on {data} failed: {error}", flush=True)
                continue
            write_atomically(result_path(result["code"], data), json.dumps(result, indent=1) + "\n")
            print(json.dumps(result), flush=True)
        results = [r for r in (finished(code, data, args.budget) for code in CODES) if r]
        (WORK / data / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        write_section(f"accuracy-{data}", section(results, data, args.budget))
    return 0


def run_code(code: str, data: str, budget: float, variant: str = "", extra: list[str] | None = None) -> dict:
    variation = [variant, *extra] if variant else []
    return json.loads(run_trial("bench.accuracy", code, data, str(budget), *variation))


def result_path(code: str, data: str) -> Path:
    return WORK / data / f"{code}.json"


def finished(code: str, data: str, budget: float) -> dict | None:
    """The result of a trial run earlier at the same budget, or None: the benchmark resumes after an
    interruption, each finished trial kept."""
    path = result_path(code, data)
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result["budget"] == budget else None


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def section(results: list[dict], data: str, budget: float) -> list[str]:
    """The BENCHMARKS.md section of one data set: the command, the setting, the table and the plot."""
    dataset, figure = DATA[data], ROOT / "docs" / "experiments" / f"time_to_accuracy_{data}.png"
    plot(results, figure, data)
    return [
        f"## Time to accuracy: {data}",
        "",
        f"`.venv-bench/bin/python -m bench.accuracy --data {data} --budget {budget:g}`",
        "(`make bench-accuracy` runs both data sets);",
        f"{machine()}; float32. One run per code; snapshots at the training times shown",
        "(validation and snapshot writing not counted), each tested afterwards with the code's own",
        f"predictions. {dataset.train_size} training and {dataset.validation} validation structures of "
        f"`{dataset.train}`; test `{dataset.test}`. Settings and departures: `bench/accuracy*.py`.",
        "Cells: test force MAE (meV/Å) / energy MAE (meV) (optimizer steps by then).",
        "",
        *table(results, data),
        *missing(results),
        "",
        f"![time to accuracy, {data}]({figure.relative_to(ROOT)})",
    ]


def missing(results: list[dict]) -> list[str]:
    absent = [code for code in CODES if code not in {r["code"] for r in results}]
    return ["", "Not run yet at this budget: " + ", ".join(absent) + "."] if absent else []


if __name__ == "__main__":
    raise SystemExit(main())
