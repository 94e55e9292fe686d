"""The experiment's figures (everything that touches matplotlib): ``learning_curve.png``,
``training_curves.png`` and ``error_by_energy.png``."""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import replacing
from ..run_directory import RunDirectory
from .tables import by_arm_and_size

PANELS = (("forces_mae_meV_per_A", "force MAE (meV/Å)"), ("energy_mae_meV", "energy MAE (meV)"))


def require_plotting() -> None:
    """Refuse, before any run starts, an experiment whose plots cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(
            "experiment: the plots need matplotlib, which is not installed; "
            "pip install 'dens_lightning[experiment]'"
        )


def new_figure(panels: int):
    """A figure of ``panels`` side by side, outside pyplot (no backend switched, nothing kept open)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * panels, 4), layout="constrained")
    return figure, figure.subplots(1, panels)


def save_png(figure, path: Path) -> None:
    with replacing(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def round_log_ticks(ax) -> None:
    """Label a log y axis at a few round values (errors often span less than a decade)."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    low, high = ax.get_ylim()
    ax.set_yticks(sorted({float(f"{v:.2g}") for v in np.geomspace(low, high, 6)[1:-1]}))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot(path: Path, rows: list[dict], title: str) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axes = new_figure(len(PANELS))
    for ax, (key, label) in zip(axes, PANELS):
        for arm, sizes in sorted(by_arm_and_size(rows, key).items()):
            xs = sorted(sizes)
            means = [statistics.fmean(sizes[x]) for x in xs]
            (line,) = ax.plot(xs, means, marker="o", label=f"{arm} ({len(sizes[xs[0]])} seeds)")
            lows, highs = [min(sizes[x]) for x in xs], [max(sizes[x]) for x in xs]
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({row["train_size"] for row in rows}))
        ax.xaxis.set_major_formatter(ScalarFormatter())  # the sizes as plain numbers
        ax.xaxis.set_minor_formatter(NullFormatter())
        round_log_ticks(ax)
        ax.set_xlabel("training structures")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    save_png(figure, path)


def validation_curve(run_dir: Path) -> tuple[list[int], list[float]]:
    """Steps and validation force MAE (meV/Å) logged in a run's ``metrics.csv``."""
    path = RunDirectory(run_dir).metrics
    if not path.exists():
        return [], []
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/forces_mae_meV_per_A")]
    return [int(float(r["step"])) for r in rows], [float(r["val/forces_mae_meV_per_A"]) for r in rows]


def plot_training_curves(path: Path, rows: list[dict], title: str) -> None:
    """Validation force MAE against the optimizer step, one line per run, one colour per arm, at the
    largest training-set size."""
    size = max(row["train_size"] for row in rows)
    figure, axes = new_figure(1)
    colours, finals = {}, []
    for row in sorted(rows, key=lambda r: (r["arm"], r["seed"])):
        if row["train_size"] != size:
            continue
        steps, values = validation_curve(Path(row["run_dir"]))
        if not steps:
            continue
        label = None if row["arm"] in colours else row["arm"]
        (line,) = axes.plot(steps, values, color=colours.get(row["arm"]), label=label, linewidth=1)
        colours.setdefault(row["arm"], line.get_color())
        finals.append(min(values))
    axes.set_yscale("log")
    if finals:  # the end of training, where the arms differ, rather than the first steps
        axes.set_ylim(0.95 * min(finals), 3.0 * max(finals))
    round_log_ticks(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("validation force MAE (meV/Å)")
    axes.grid(True, which="both", alpha=0.3)
    if colours:
        axes.legend()
    figure.suptitle(f"{title.replace(': ', chr(10), 1)}, {size} training structures", fontsize="medium")
    save_png(figure, path)


def plot_binned(path: Path, binned: list[dict], title: str) -> None:
    """Force and energy RMSE against the bins' mean position, one line per arm at the largest size."""
    size = max(b["train_size"] for b in binned)
    figure, axes = new_figure(2)
    keys = (("forces_rmse_meV_per_A", "force RMSE (meV/Å)"), ("energy_rmse_meV", "energy RMSE (meV)"))
    for ax, (key, label) in zip(axes, keys):
        for arm in sorted({b["arm"] for b in binned}):
            per_bin: dict[int, list[dict]] = {}
            for b in binned:
                if b["arm"] == arm and b["train_size"] == size:
                    per_bin.setdefault(b["bin"], []).append(b)
            centres = [
                0.5 * (v[0]["energy_above_lowest_from_eV"] + v[0]["energy_above_lowest_to_eV"])
                for _, v in sorted(per_bin.items())
            ]
            values = [statistics.fmean(x[key] for x in v) for _, v in sorted(per_bin.items())]
            ax.plot(centres, values, marker="o", label=arm)
        ax.set_xlabel("energy above the lowest test structure (eV), bin centre")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"{title}: {size} training structures")
    save_png(figure, path)
