"""The experiment's report: ``results.csv`` (one row per run), ``learning_curve.png`` (test MAE
against training-set size, log-log, one line per arm: the mean over seeds, the band from the lowest
to the highest seed), ``training_curves.png`` (validation force MAE against the optimizer step, one
line per run) and ``summary.md`` (the table, pretrained/scratch ratios, matched scratch sizes, and
with DeNS arms their ratios to plain training from the same start). With
``energy_bins``, also ``energy_bins.csv`` and ``error_by_energy.png``: the test RMSE in equal-count
bins of each test structure's energy above the test set's lowest, and a table of it in the summary.
With ``other``, the summary also gives each arm's force MAE on that file of other molecules, and
the pretrained start's."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import write_text_atomic
from .plots import plot, plot_binned, plot_training_curves
from .tables import BIN_COLUMNS, OTHER_START, binned_errors, binned_summary, other_summary, summary, write_csv


def write_report(out: Path, rows: list[dict], spec) -> None:
    """``results.csv``, ``learning_curve.png`` and ``summary.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    if not rows:
        return
    if len(spec.starts) > 1:
        compared = "pretrained against scratch"
    elif len(spec.dens) > 1:
        compared = "DeNS against plain training"
    else:
        compared = f"{spec.starts[0]} start"
    title = f"Transfer experiment {spec.name}: {compared}"
    plot(out / "learning_curve.png", rows, title)
    plot_training_curves(out / "training_curves.png", rows, title)
    text = summary(rows, title)
    binned = binned_errors(rows, spec.energy_bins) if spec.energy_bins else []
    if binned:
        write_csv(out / "energy_bins.csv", binned, BIN_COLUMNS)
        plot_binned(out / "error_by_energy.png", binned, title)
        text += "\n".join(binned_summary(binned)) + "\n"
    if spec.other:
        start = out / OTHER_START
        start = json.loads(start.read_text()) if start.exists() else None
        text += "\n".join(other_summary(rows, spec.other, start)) + "\n"
    write_text_atomic(out / "summary.md", text)
