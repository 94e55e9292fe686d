"""The experiment's report: ``results.csv`` (one row per run), ``learning_curve.png`` (test MAE
against training-set size, log-log, one line per arm: the mean over seeds, the band from the lowest
to the highest seed) and ``summary.md`` (the table, and pretrained/scratch ratios)."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from ..files import replacing, write_text_atomic

PANELS = (("forces_mae_meV_per_A", "force MAE (meV/Å)"), ("energy_mae_meV", "energy MAE (meV)"))
COLUMNS = (
    "arm",
    "pretrained",
    "dens",
    "train_size",
    "seed",
    "n_structures",
    "energy_mae_meV",
    "energy_rmse_meV",
    "energy_mae_meV_per_atom",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
    "wall_seconds",
    "run_dir",
)


def by_arm_and_size(rows: list[dict], key: str) -> dict[str, dict[int, list[float]]]:
    """``key`` of every run, grouped by arm, then training-set size (one value per seed)."""
    grouped: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row["arm"], {}).setdefault(row["train_size"], []).append(float(row[key]))
    return grouped


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def plot(path: Path, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    figure, axes = plt.subplots(1, len(PANELS), figsize=(10, 4), constrained_layout=True)
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
        ax.set_xlabel("training structures")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    with replacing(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def summary(rows: list[dict], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "Test MAE, mean over seeds (lowest–highest seed). Energy in meV, forces in meV/Å.",
        "",
        "| training structures | arm | seeds | energy MAE | force MAE |",
        "|---|---|---|---|---|",
    ]
    energy, forces = by_arm_and_size(rows, "energy_mae_meV"), by_arm_and_size(rows, "forces_mae_meV_per_A")
    sizes = sorted({row["train_size"] for row in rows})
    for size in sizes:
        for arm in sorted(energy):
            if size not in energy[arm]:
                continue
            e, f = energy[arm][size], forces[arm][size]
            lines.append(f"| {size} | {arm} | {len(e)} | {_spread(e)} | {_spread(f)} |")
    ratios = []
    for arm in sorted(forces):
        if not arm.startswith("pretrained"):
            continue
        scratch = arm.replace("pretrained", "scratch")
        for size in sizes:
            if size in forces[arm] and size in forces.get(scratch, {}):
                ratio = statistics.fmean(forces[arm][size]) / statistics.fmean(forces[scratch][size])
                ratios.append(f"| {size} | {arm} / {scratch} | {ratio:.2f} |")
    if ratios:
        lines += [
            "",
            "Force MAE ratio (below 1: pretraining helps):",
            "",
            "| training structures | arms | ratio |",
        ]
        lines += ["|---|---|---|", *ratios]
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f}–{max(values):.1f})"


def write_report(out: Path, rows: list[dict], spec) -> None:
    """``results.csv``, ``learning_curve.png`` and ``summary.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    if not rows:
        return
    title = f"Transfer experiment {spec.name}: pretrained against scratch"
    plot(out / "learning_curve.png", rows, title)
    write_text_atomic(out / "summary.md", summary(rows, title))
