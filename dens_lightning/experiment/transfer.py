"""Transfer-learning experiment: does pretraining pay off, and how much data does it save?

Pretrain once (or reuse a model file), then finetune from the pretrained backbone and from scratch at
several training-set sizes and seeds, with the same finetune budget for every arm, optionally with and
without DeNS (and DeNS without force encoding, the paper's ablation), optionally a plain arm
given the wall time of the DeNS arm (``equal_time``), and optionally a scratch arm given the
pretraining's wall time on top of the finetune budget (``compute_matched``). Every run is a normal
run directory under the experiment's folder; a finished run is read back, an interrupted one
resumed, so the whole experiment picks up where it stopped.

The experiment's YAML, its arms and its splits (the same validation and test sets for every run,
nested training sets per seed) are in :mod:`.spec`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from ..artifacts import has_energy_head, read_metadata, resolve_model_path
from ..errors import InputError
from ..files import write_text_atomic
from ..run_directory import RunDirectory
from ..zoo import entry as zoo_entry
from ..zoo import is_zoo
from .spec import COMPUTE_MATCHED, Arm, TransferConfig, arms, draw_splits
from .tables import OTHER_ERRORS, OTHER_START


class TransferExperiment:
    """Runs and collects the experiment in ``out``."""

    def __init__(self, spec: TransferConfig, out: str | Path, progress: bool = False):
        self.spec = spec
        self.out = Path(out)
        self.progress = progress

    def _finetune_config(self):
        from ..config import load_config

        return load_config("finetune", overrides=[*self.spec.model, *self.spec.finetune])

    def read(self, path: str | Path):
        """The structures of ``path``, read with the finetune runs' data options (units, keys)."""
        from ..data.datamodule import AtomsDataModule
        from ..data.readers import read_structures

        cfg = self._finetune_config()
        return read_structures(path, AtomsDataModule(cfg.data, cutoff=float(cfg.model.cutoff)).read_options())

    def data_file(self) -> tuple[Path, int, str | None]:
        """The data file every finetune run reads (the embedded default resolved to its cached file),
        its number of structures, and the test file (None: the test set is drawn from the data file)."""
        cfg = self._finetune_config()
        if cfg.data.train or cfg.data.val:
            raise InputError(
                "experiment: give the data as data.path (and optionally data.test), not data.train/data.val"
            )
        path = cfg.data.path
        if not path:
            from ..data.embedded import embedded_dataset

            path = str(embedded_dataset(cfg.data.embedded, lazy=False))
        return Path(path), len(self.read(path)), cfg.data.test or None

    def pretrained_model(self) -> Path:
        """The reused model, or the experiment's own pretraining run (made once)."""
        if self.spec.pretrain.model:
            return Path(self.spec.pretrain.model)
        from ..config import load_config
        from ..runner import run_pretrain

        run_dir = RunDirectory(self.out / "pretrain")
        if not run_dir.finished:
            cfg = load_config("pretrain", overrides=[*self.spec.model, *self.spec.pretrain.overrides])
            resume = run_dir.resumable
            timed(
                lambda: run_pretrain(cfg, run_dir.path, resume=resume, progress=self.progress), run_dir.path
            )
        return run_dir.path

    def runs(self) -> Iterator[tuple[Arm, int, int, Path]]:
        """Every (arm, size, seed) of the experiment and its run directory, smallest sizes first."""
        for size in sorted(self.spec.sizes):
            for seed in self.spec.seeds:
                for arm in arms(self.spec):
                    if arm.dens == "no_encoding" and seed not in (self.spec.ablation_seeds or [seed]):
                        continue
                    yield arm, size, seed, self.out / "runs" / f"{arm.name}-n{size}-seed{seed}"

    def max_steps(self) -> int:
        """The optimizer steps of a finetune run: ``steps``, else ``trainer.max_steps`` of the
        finetune overrides (equal-time arms need it)."""
        if self.spec.steps is not None:
            return self.spec.steps
        cfg = self._finetune_config()
        steps = cfg.trainer.get("max_steps", -1)
        if steps is None or steps < 1:
            raise InputError("experiment: equal_time needs a step budget: set steps or trainer.max_steps")
        return int(steps)

    def equal_time_steps(self, arm: Arm, size: int, seed: int) -> int:
        """Steps for an equal-time arm: the plain budget times the DeNS twin's wall time over the
        plain twin's (both finished runs of the same size and seed)."""
        walls = []
        for twin in arm.twins:
            wall = self.out / "runs" / f"{twin.name}-n{size}-seed{seed}" / "wall_seconds.txt"
            if not wall.exists():
                raise InputError(f"experiment: {wall}: the {twin.name} run must finish before {arm.name}")
            walls.append(float(wall.read_text()))
        return max(1, round(self.max_steps() * walls[1] / walls[0]))

    def pretraining_seconds(self) -> float:
        """The wall time of the pretraining run (its ``wall_seconds.txt``, written by this experiment;
        for a reused ``pretrain.model``, the one in its run directory, or the zoo entry's record)."""
        model = self.spec.pretrain.model
        if model and is_zoo(model):
            seconds = zoo_entry(model).pretraining_seconds
            if seconds is None:
                raise InputError(
                    f"experiment: {model}: compute_matched needs the pretraining's wall time, "
                    "which this zoo entry does not record"
                )
            return float(seconds)
        source = Path(model) if model else self.out / "pretrain"
        wall = (source if source.is_dir() else source.parent) / "wall_seconds.txt"
        if not wall.exists():
            raise InputError(
                f"experiment: {wall}: compute_matched needs the pretraining's wall time, in seconds, there"
            )
        return float(wall.read_text())

    def compute_matched_steps(self, size: int, seed: int) -> int:
        """Steps for the compute-matched scratch arm: the finetune budget, plus the steps the scratch
        twin (same size and seed) would take in the pretraining's wall time at its own pace."""
        wall = self.out / "runs" / f"{Arm(False).name}-n{size}-seed{seed}" / "wall_seconds.txt"
        if not wall.exists():
            raise InputError(f"experiment: {wall}: the scratch run must finish before {COMPUTE_MATCHED}")
        budget = self.max_steps()
        return round(budget * (1 + self.pretraining_seconds() / float(wall.read_text())))

    def finetune(self, arm: Arm, seed: int, run_dir: Path, data: Path, total: int, indices: dict, pretrained):
        """One finetune run on the given split, skipped when finished and resumed when interrupted."""
        from ..data.splits import write_splits
        from ..runner import run_finetune
        from ..warm_start import finetune_config, pretrained_backbone

        directory = RunDirectory(run_dir)
        if directory.finished:
            return
        if not directory.splits.exists():
            write_splits(directory.splits, seed, total, data, indices)
        overrides = [*self.spec.finetune, f"data.path={data}", f"seed={seed}", *arm.overrides]
        if arm.equal_time:
            size = len(indices["train"])
            overrides.append(f"trainer.max_steps={self.equal_time_steps(arm, size, seed)}")
        elif arm.pretrain_time:
            overrides.append(f"trainer.max_steps={self.compute_matched_steps(len(indices['train']), seed)}")
        elif self.spec.steps is not None:
            overrides.append(f"trainer.max_steps={self.spec.steps}")
        resume = directory.resumable
        source = pretrained_backbone(pretrained) if arm.pretrained else None  # read once, for both
        cfg = finetune_config(source, overrides=overrides if source else [*self.spec.model, *overrides])
        timed(
            lambda: run_finetune(cfg, run_dir, resume=resume, from_path=source, progress=self.progress),
            run_dir,
        )

    def run(self) -> list[dict]:
        """Every run of the experiment (finished ones are read back), then the report files."""
        from .plots import require_plotting
        from .report import write_report

        require_plotting()
        data, total, test_file = self.data_file()
        fixed, pools = draw_splits(total, self.spec, bool(test_file))
        pretrained = self.pretrained_model() if "pretrained" in self.spec.starts else None
        test = None
        for arm, size, seed, run_dir in self.runs():
            indices = {**fixed, "train": np.sort(pools[seed][:size])}
            self.finetune(arm, seed, run_dir, data, total, indices, pretrained)
            if self.spec.energy_bins and not (run_dir / STRUCTURE_ERRORS).exists():
                if test is None:  # a view of the data file keeps each structure's index in the file
                    test = self.read(test_file) if test_file else self.read(data).view(fixed["test"])
                write_test_structure_errors(run_dir, test)
            if self.spec.other:
                write_other_errors(RunDirectory(run_dir).model, run_dir / OTHER_ERRORS, self.spec.other)
        if (
            self.spec.other
            and pretrained is not None
            and has_energy_head(read_metadata(resolve_model_path(pretrained)))
        ):
            write_other_errors(pretrained, self.out / OTHER_START, self.spec.other)
        rows = self.rows()
        write_report(self.out, rows, self.spec)
        return rows

    def rows(self) -> list[dict]:
        """One row per finished run: the arm, size, seed, test errors, wall time and, for a warm start,
        the validation errors before its first step."""
        from ..warm_start import read_warm_start

        rows = []
        for arm, size, seed, run_dir in self.runs():
            metrics_file = RunDirectory(run_dir).test_metrics
            if not metrics_file.exists():
                continue
            row = {"arm": arm.name, "pretrained": arm.pretrained, "dens": arm.dens}
            row["steps"] = run_steps(run_dir)
            row |= {"train_size": size, "seed": seed, **json.loads(metrics_file.read_text())}
            wall = run_dir / "wall_seconds.txt"
            row["wall_seconds"] = float(wall.read_text()) if wall.exists() else None
            before = (read_warm_start(run_dir) or {}).get("validation_before_finetuning") or {}
            row["val_energy_mae_meV_before_finetuning"] = before.get("energy_mae_meV")
            row["val_forces_mae_meV_per_A_before_finetuning"] = before.get("forces_mae_meV_per_A")
            other = run_dir / OTHER_ERRORS
            if other.exists():
                row["other_forces_mae_meV_per_A"] = json.loads(other.read_text())["forces_mae_meV_per_A"]
            row["run_dir"] = str(run_dir)
            rows.append(row)
        return rows


STRUCTURE_ERRORS = "test_structures.csv"


def write_other_errors(model: Path, path: Path, other: str) -> None:
    """The errors of ``model`` on the labelled file ``other`` in ``path`` (once: kept when present)."""
    from ..evaluation import model_errors

    if not path.exists():
        write_text_atomic(path, json.dumps(model_errors(model, other), indent=2) + "\n")


def run_steps(run_dir: Path) -> int | None:
    """The optimizer steps a finished run was given (its resolved ``config.yaml``)."""
    config = RunDirectory(run_dir).config
    if not config.exists():
        return None
    steps = OmegaConf.load(config).trainer.get("max_steps")
    return int(steps) if steps is not None and steps > 0 else None


def write_test_structure_errors(run_dir: Path, test) -> None:
    """The errors of the run's model on each ``test`` structure in ``test_structures.csv``."""
    from ..artifacts import load_potential
    from ..evaluation import evaluate_structures, write_structure_errors

    _, errors = evaluate_structures(load_potential(RunDirectory(run_dir).model), test)
    write_structure_errors(run_dir / STRUCTURE_ERRORS, errors)


def timed(run, run_dir: Path) -> tuple[Any, float]:
    """Run, and add the wall time to the run's ``wall_seconds.txt`` (resumed runs add up); returns
    what ``run`` returned and the total seconds recorded."""
    start = time.perf_counter()
    result = run()
    wall = run_dir / "wall_seconds.txt"
    before = float(wall.read_text()) if wall.exists() else 0.0
    total = before + time.perf_counter() - start
    write_text_atomic(wall, f"{total:.1f}\n")
    return result, total
