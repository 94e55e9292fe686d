"""What every code's budgeted training run in ``bench.accuracy`` shares: the training-time clock, the
Lightning callback that writes a snapshot at each mark, and the test errors of an ASE calculator.

Imports nothing of this package, so MACE's own environment (``.venv-mace``) can use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


class TrainingClock:
    """Training time: wall time since :meth:`start`, less the spans between :meth:`pause` and
    :meth:`resume` (validation, snapshot writing). ``marks`` (seconds) are consumed in order."""

    def __init__(self, marks: list[float]):
        self.pending = sorted(float(m) for m in marks)
        self.written: list[dict] = []
        self.began = self.excluded = self.paused_at = 0.0

    def start(self) -> None:
        self.began, self.excluded = time.perf_counter(), 0.0

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        self.excluded += time.perf_counter() - self.paused_at

    def seconds(self) -> float:
        return time.perf_counter() - self.began - self.excluded

    @property
    def done(self) -> bool:
        return not self.pending

    def passed(self, step: int, write: Callable[[float], None]) -> None:
        """After a training step: call ``write(mark)`` for every mark the training time has passed
        (the writing not counted), recording the step and time of each."""
        elapsed = self.seconds()
        while self.pending and elapsed >= self.pending[0]:
            mark = self.pending.pop(0)
            self.pause()
            write(mark)
            self.resume()
            self.written.append({"seconds": mark, "training_seconds": elapsed, "step": step})


WRITTEN = "written.json"  # the snapshots of a run: mark, training seconds and step of each


def snapshot_name(mark: float) -> str:
    return f"{mark:g}s"


def wall_clock_callback(base: type, marks: list[float], directory: str | Path, save: Callable | None = None):
    """A ``base`` (``lightning.Callback`` or ``pytorch_lightning.Callback``) that writes
    ``directory/<mark>s.ckpt`` (``trainer.save_checkpoint``, or ``save(trainer, module, path)``) when
    the training time passes each of ``marks`` (validation excluded), then stops the run."""
    directory = Path(directory)

    class WallClockCheckpoints(base):
        def __init__(self):
            self.clock = TrainingClock(marks)

        @property
        def written(self) -> list[dict]:
            return self.clock.written

        def on_train_start(self, trainer, pl_module) -> None:
            self.clock.start()

        def on_validation_start(self, trainer, pl_module) -> None:
            self.clock.pause()

        def on_validation_end(self, trainer, pl_module) -> None:
            self.clock.resume()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
            def write(mark: float) -> None:
                path = directory / f"{snapshot_name(mark)}.ckpt"
                path.parent.mkdir(parents=True, exist_ok=True)
                (save or (lambda t, m, p: t.save_checkpoint(p)))(trainer, pl_module, path)

            before = len(self.clock.written)
            self.clock.passed(trainer.global_step, write)
            if len(self.clock.written) > before:  # read back by a trial that ran the code in a subprocess
                (directory / WRITTEN).write_text(json.dumps(self.clock.written))
            if self.clock.done:
                trainer.should_stop = True

    return WallClockCheckpoints()


def lightning_wall_clock(marks: list[float], directory: str):
    """:func:`wall_clock_callback` on ``lightning.Callback`` (for a config's ``_target_``: nequip)."""
    import lightning

    return wall_clock_callback(lightning.Callback, marks, directory)


def calculator_errors(calculator, frames: list) -> dict:
    """:func:`prediction_errors` of an ASE ``calculator`` on ``frames`` (one call per structure)."""
    energies, forces = [], []
    for atoms in frames:
        probe = atoms.copy()
        probe.calc = calculator
        energies.append(probe.get_potential_energy())
        forces.append(probe.get_forces())
    return prediction_errors(frames, energies, forces)


def prediction_errors(frames: list, energies: list[float], forces: list) -> dict:
    """Energy MAE per structure (meV) and force MAE and RMSE per component (meV/Å) of predicted
    ``energies`` and ``forces`` (eV, eV/Å) against the references held by ``frames`` (ASE Atoms)."""
    energy_errors = [e - atoms.get_potential_energy() for e, atoms in zip(energies, frames, strict=True)]
    force_errors = np.concatenate(
        [(np.asarray(f) - atoms.get_forces()).ravel() for f, atoms in zip(forces, frames, strict=True)]
    )
    return {
        "n_structures": len(frames),
        "energy_mae_meV": 1e3 * float(np.mean(np.abs(energy_errors))),
        "forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(force_errors))),
        "forces_rmse_meV_per_A": 1e3 * float(np.sqrt(np.mean(force_errors**2))),
    }
