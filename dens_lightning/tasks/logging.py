"""A CSV logger that keeps a resumed run's history in the same ``metrics.csv``."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv`` (Lightning deletes it) and continue its columns."""
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` directly in the run directory; rows of a resumed run are appended."""

    def __init__(self, run_dir) -> None:
        super().__init__(run_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def log_parts(module, prefix: str, parts: dict, batch_size: int, prog_bar=("loss", "cosine")) -> None:
    """Log each training term as ``prefix/name``, per step and as an epoch mean. The values are
    already means over every device (see :func:`.reduction.combine`), so nothing is synced here."""
    for name, value in parts.items():
        module.log(
            f"{prefix}/{name}",
            value,
            batch_size=batch_size,
            on_step=True,
            on_epoch=True,
            prog_bar=name in prog_bar,
        )


def log_epoch_means(module, prefix: str, means: dict[str, float], prog_bar=()) -> None:
    """Log means that an accumulator already added over the epoch and every device."""
    for name, value in means.items():
        module.log(f"{prefix}/{name}", value, prog_bar=name in prog_bar)
