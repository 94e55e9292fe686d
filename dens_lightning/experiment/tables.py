"""The experiment's tables: ``results.csv`` and ``energy_bins.csv`` rows, and the text of
``summary.md`` (seed means and spreads, pretrained/scratch ratios, matched scratch sizes, DeNS ratios,
and the test RMSE binned by energy)."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import numpy as np

from ..evaluation import read_structure_errors
from ..files import write_text_atomic
from .spec import COMPUTE_MATCHED

OTHER_ERRORS = "other_metrics.json"  # a run's errors on the experiment's ``other`` file
OTHER_START = "other_start.json"  # the pretrained start's errors on it (in the experiment's folder)

COLUMNS = (
    "arm",
    "pretrained",
    "dens",
    "train_size",
    "seed",
    "steps",
    "n_structures",
    "energy_mae_meV",
    "energy_rmse_meV",
    "energy_mae_meV_per_atom",
    "forces_mae_meV_per_A",
    "forces_rmse_meV_per_A",
    "wall_seconds",
    "val_energy_mae_meV_before_finetuning",  # pretrained runs: the warm-started model before its first step
    "val_forces_mae_meV_per_A_before_finetuning",
    "other_forces_mae_meV_per_A",  # with ``other``: the force MAE on the other molecules' file
    "run_dir",
)


def by_arm_and_size(rows: list[dict], key: str) -> dict[str, dict[int, list[float]]]:
    """``key`` of every run, grouped by arm, then training-set size (one value per seed)."""
    grouped: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        grouped.setdefault(row["arm"], {}).setdefault(row["train_size"], []).append(float(row[key]))
    return grouped


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def dens_ratios(rows: list[dict]) -> list[str]:
    """Markdown rows: each DeNS (or equal-time) arm's test MAE over the plain arm's of the same start
    and size, forces and energies, from the seed means, with the per-seed force ratios."""
    lines = []
    groups: dict[tuple[int, str], dict[int, dict]] = {}
    for row in rows:
        groups.setdefault((row["train_size"], row["arm"]), {})[row["seed"]] = row
    for (size, arm), runs in sorted(groups.items()):
        start = arm.split("+")[0].split("@")[0]
        plain = groups.get((size, start))
        if arm == start or not plain:
            continue
        seeds = sorted(set(runs) & set(plain))
        if not seeds:
            continue
        ratio = {}
        for key in ("forces_mae_meV_per_A", "energy_mae_meV"):
            mine = statistics.fmean(float(runs[s][key]) for s in seeds)
            ratio[key] = mine / statistics.fmean(float(plain[s][key]) for s in seeds)
        per_seed = ", ".join(
            f"{float(runs[s]['forces_mae_meV_per_A']) / float(plain[s]['forces_mae_meV_per_A']):.3f}"
            for s in seeds
        )
        lines.append(
            f"| {size} | {arm} / {start} | {len(seeds)} | {ratio['forces_mae_meV_per_A']:.3f} ({per_seed}) "
            f"| {ratio['energy_mae_meV']:.3f} |"
        )
    if not lines:
        return []
    return [
        "",
        "Test MAE of each DeNS arm over plain training from the same start (below 1: better), seed "
        "means over the seeds both have; forces per seed in brackets:",
        "",
        "| training structures | arms | seeds | force MAE ratio | energy MAE ratio |",
        "|---|---|---|---|---|",
        *lines,
    ]


def other_summary(rows: list[dict], other: str, start: dict | None) -> list[str]:
    """Markdown lines: the force MAE of every arm (and of the pretrained start) on the ``other`` file,
    molecules no run trained on: what finetuning forgets."""
    forces = by_arm_and_size(
        [r for r in rows if r.get("other_forces_mae_meV_per_A") is not None], "other_forces_mae_meV_per_A"
    )
    if not forces:
        return []
    lines = [
        "",
        f"## Force MAE on other molecules: `{other}`",
        "",
        "Mean over seeds (lowest–highest seed), meV/Å"
        + (f"; the pretrained start before finetuning: {start['forces_mae_meV_per_A']:.1f}" if start else "")
        + ".",
        "",
        "| training structures | arm | seeds | force MAE on other molecules |",
        "|---|---|---|---|",
    ]
    for size in sorted({size for curve in forces.values() for size in curve}):
        for arm in sorted(forces):
            if size in forces[arm]:
                values = forces[arm][size]
                lines.append(f"| {size} | {arm} | {len(values)} | {_spread(values)} |")
    return lines


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
        curve = {n: statistics.fmean(v) for n, v in forces.get(scratch, {}).items()}
        matched_compute = forces.get(COMPUTE_MATCHED, {}) if arm == "pretrained" else {}
        for size in sizes:
            mean = statistics.fmean(forces[arm][size]) if size in forces[arm] else None
            if mean is not None and size in curve:
                ratio, matched = mean / curve[size], scratch_size_for(mean, curve)
                ratios.append(f"| {size} | {arm} / {scratch} | {ratio:.2f} | {matched} |")
            if mean is not None and size in matched_compute:
                ratio = mean / statistics.fmean(matched_compute[size])
                ratios.append(f"| {size} | {arm} / {COMPUTE_MATCHED} (equal compute) | {ratio:.2f} | |")
    if ratios:
        lines += [
            "",
            "Force MAE ratio (below 1: pretraining helps), and the training-set size at which the scratch "
            "arm reaches the pretrained arm's force MAE (log-log interpolation between measured sizes); "
            f"`{COMPUTE_MATCHED}` trained from scratch for the finetune budget plus the pretraining's "
            "wall time:",
            "",
            "| training structures | arms | ratio | scratch structures for the same force MAE |",
        ]
        lines += ["|---|---|---|---|", *ratios]
    lines += dens_ratios([row for row in rows if row["arm"] != COMPUTE_MATCHED])
    return "\n".join(lines) + "\n"


BIN_COLUMNS = (
    "arm",
    "train_size",
    "seed",
    "bin",
    "energy_above_lowest_from_eV",
    "energy_above_lowest_to_eV",
    "n_structures",
    "energy_rmse_meV",
    "forces_rmse_meV_per_A",
    "energy_mae_meV",
    "forces_mae_meV_per_A",
)


def binned_errors(rows: list[dict], n_bins: int) -> list[dict]:
    """Per run and bin: the test errors of the structures whose reference energy above the test set's
    lowest falls in the bin. Bins hold equal numbers of structures; the test set is the same for every
    run, so are the bins."""
    out = []
    for row in rows:
        path = Path(row["run_dir"]) / "test_structures.csv"
        if not path.exists():
            continue
        errors = read_structure_errors(path)  # the format evaluation.write_structure_errors writes
        above = errors["energy_eV"] - errors["energy_eV"].min()
        edges = np.quantile(above, np.linspace(0, 1, n_bins + 1))
        which = np.clip(np.searchsorted(edges, above, side="right") - 1, 0, n_bins - 1)
        components = 3 * errors["num_atoms"]
        for b in range(n_bins):
            sel = which == b
            weights = components[sel]
            out.append(
                {
                    "arm": row["arm"],
                    "train_size": row["train_size"],
                    "seed": row["seed"],
                    "bin": b,
                    "energy_above_lowest_from_eV": float(edges[b]),
                    "energy_above_lowest_to_eV": float(edges[b + 1]),
                    "n_structures": int(sel.sum()),
                    "energy_rmse_meV": float(np.sqrt(np.mean(errors["energy_error_meV"][sel] ** 2))),
                    "forces_rmse_meV_per_A": float(
                        np.sqrt(np.sum(weights * errors["forces_rmse_meV_per_A"][sel] ** 2) / weights.sum())
                    ),
                    "energy_mae_meV": float(np.mean(np.abs(errors["energy_error_meV"][sel]))),
                    "forces_mae_meV_per_A": float(
                        np.sum(weights * errors["forces_mae_meV_per_A"][sel]) / weights.sum()
                    ),
                }
            )
    return out


def binned_summary(binned: list[dict]) -> list[str]:
    """The binned RMSE as a markdown table: one row per size and arm, one column per bin (seed means)."""
    bins = sorted({b["bin"] for b in binned})
    edges = {b["bin"]: (b["energy_above_lowest_from_eV"], b["energy_above_lowest_to_eV"]) for b in binned}
    counts = {b["bin"]: b["n_structures"] for b in binned}
    header = [f"{edges[b][0]:.2f}–{edges[b][1]:.2f} eV ({counts[b]})" for b in bins]
    lines = [
        "",
        "## Test RMSE by energy above the lowest test structure",
        "",
        "Equal-count bins of each test structure's reference energy above the test set's lowest "
        "(for one molecule, a proxy for the temperature it was sampled at). Energy RMSE (meV) / "
        "force RMSE (meV/Å), mean over seeds.",
        "",
        "| training structures | arm | " + " | ".join(header) + " |",
        "|---|---|" + "---|" * len(bins),
    ]
    groups: dict[tuple[int, str], dict[int, list[dict]]] = {}
    for b in binned:
        groups.setdefault((b["train_size"], b["arm"]), {}).setdefault(b["bin"], []).append(b)
    for (size, arm), per_bin in sorted(groups.items()):
        cells = []
        for b in bins:
            seeds = per_bin.get(b, [])
            energy = statistics.fmean(x["energy_rmse_meV"] for x in seeds) if seeds else float("nan")
            forces = statistics.fmean(x["forces_rmse_meV_per_A"] for x in seeds) if seeds else float("nan")
            cells.append(f"{energy:.1f} / {forces:.1f}")
        lines.append(f"| {size} | {arm} | " + " | ".join(cells) + " |")
    return lines


def scratch_size_for(error: float, curve: dict[int, float]) -> str:
    """The training-set size at which the scratch learning curve (size -> mean error) reaches
    ``error``, interpolated linearly in log size and log error between the two measured sizes that
    bracket it; outside the measured range, a bound ("> 200", "< 50")."""
    sizes = sorted(curve)
    for low, high in zip(sizes, sizes[1:]):
        a, b = curve[low], curve[high]
        if min(a, b) <= error <= max(a, b) and a != b:
            t = (np.log(error) - np.log(a)) / (np.log(b) - np.log(a))
            return f"{np.exp(np.log(low) + t * (np.log(high) - np.log(low))):.0f}"
    if error < min(curve.values()):
        return f"> {sizes[-1]}"
    return f"< {sizes[0]}" if error > curve[sizes[0]] else "–"


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f}–{max(values):.1f})"
