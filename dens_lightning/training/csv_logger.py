"""A CSV logger that keeps a resumed run's history in the same ``metrics.csv``."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ..files import replacing


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv`` (Lightning deletes it) and continue its columns, without
        the rows of steps after the checkpoint a resumed run continues from (it logs them again)."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            self.metrics_keys = sorted(reader.fieldnames or [])
            rows = list(reader)
        if self.resume_step is None:
            return
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < self.resume_step]
        if len(kept) < len(rows):
            with replacing(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)


class RunCSVLogger(CSVLogger):
    """``metrics.csv`` directly in the run directory. A resumed run (``resume_step``: the global step of
    its checkpoint) appends its rows after those logged before that step."""

    def __init__(self, run_dir, resume_step: int | None = None) -> None:
        super().__init__(run_dir, name="", version="")
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.resume_step)
        return self._experiment
