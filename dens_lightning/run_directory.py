"""The run directory: the one place that names the files a training run writes (DESIGN section 3).

``config.yaml`` (the resolved config), ``splits.json`` (which structures went where),
``metrics.csv``, ``checkpoints/last.ckpt`` and ``checkpoints/best.ckpt``, ``model.safetensors``,
``test_metrics.json``, ``warm_start.json`` (where a ``finetune --from`` run began) and ``README.md``
(the model card). Every file is written atomically.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from .errors import InputError
from .files import write_text_atomic

MODEL_FILE = "model.safetensors"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"


class RunDirectory:
    """The files of one training run, by name, under ``path``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    @classmethod
    def timestamped(cls, stage: str) -> RunDirectory:
        """``runs/<stage>/<YYYYmmdd-HHMMSS>``: where a run goes when no directory is given."""
        return cls(Path("runs") / stage / datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.path / "splits.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST_CHECKPOINT

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def test_metrics(self) -> Path:
        return self.path / "test_metrics.json"

    @property
    def warm_start(self) -> Path:
        return self.path / "warm_start.json"

    @property
    def card(self) -> Path:
        return self.path / "README.md"

    @property
    def finished(self) -> bool:
        """Whether the run wrote its model file (a finished run)."""
        return self.model.exists()

    @property
    def resumable(self) -> bool:
        """Whether the run has a checkpoint to continue from."""
        return self.last_checkpoint.exists()

    def start(self, resume: bool) -> Path | None:
        """The checkpoint a run continues from (None for a new run), after checking that the
        directory fits the request: ``resume`` needs a checkpoint, a new run an unused directory."""
        if resume and not self.resumable:
            raise InputError(f"{self.path}: nothing to resume (no checkpoints/{LAST_CHECKPOINT})")
        if not resume and self.resumable:
            raise InputError(
                f"{self.path}: already holds a run; pass --resume to continue it or choose another --run-dir"
            )
        return self.last_checkpoint if resume else None

    def saved_config(self) -> Path:
        """The config a resumed run continues with."""
        if not self.config.exists():
            raise InputError(f"{self.config}: not found; nothing to resume")
        return self.config

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config, text)
