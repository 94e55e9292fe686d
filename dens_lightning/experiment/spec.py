"""The transfer experiment's specification: ``configs/experiment/*.yaml`` read and checked
(:class:`TransferConfig`), the arms it runs (:class:`Arm`, :func:`arms`), and its splits.

The splits are drawn here, once, and written to each run's ``splits.json``: validation and test sets
are the same for every run, and the training sets of one seed are nested (the 50 structures of the
50-size run are among the 100 of the 100-size run), so arms and sizes differ only in what they vary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from ..errors import InputError


@dataclass
class PretrainSpec:
    model: str | None = None  # a model file or pretrain run directory to reuse; None: pretrain here
    overrides: list[str] = field(default_factory=list)  # dotted overrides of the pretrain config


@dataclass
class TransferConfig:
    """``configs/experiment/*.yaml``; every key is checked."""

    name: str = "transfer"
    model: list[str] = field(default_factory=list)  # model.* overrides, for pretraining and scratch runs
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    finetune: list[str] = field(default_factory=list)  # overrides of every finetune run (data, budget)
    sizes: list[int] = field(default_factory=lambda: [16, 32, 64])  # training-set sizes
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    # DeNS settings of the arms: false (off), true (on), no_encoding (on, without force encoding)
    dens: list[Any] = field(default_factory=lambda: [False])
    starts: list[str] = field(default_factory=lambda: ["scratch", "pretrained"])  # which starts to run
    steps: int | None = None  # optimizer steps of every finetune run (trainer.max_steps); null: as set
    equal_time: bool = False  # also a plain arm with the steps the DeNS arm's wall time affords
    compute_matched: bool = False  # also a scratch arm with the steps the pretraining's wall time adds
    ablation_seeds: list[int] | None = None  # seeds of the no_encoding arm; null: every seed
    validation: int = 16  # validation structures, the same for every run
    test: int = 64  # test structures, the same for every run (0 when data.test names a file)
    split_seed: int = 0  # draws the validation and test sets
    other: str | None = None  # a labelled file of other molecules: every finetuned model and the
    #                          pretrained start are tested on it (what finetuning forgets)
    energy_bins: int = 0  # >0: also report test errors in this many equal-count bins of each test
    #                       structure's energy above the test set's lowest (one molecule: a temperature proxy)


DENS_SETTINGS = {"off": [], "on": [], "no_encoding": ["task.dens.force_encoding=false"]}
DENS_NAMES = {"off": "", "on": "+dens", "no_encoding": "+dens-no-encoding"}
STARTS = ("scratch", "pretrained")


def dens_setting(value: Any) -> str:
    """``off``, ``on`` or ``no_encoding`` from a YAML value (booleans too)."""
    text = str(value).lower()
    setting = {"false": "off", "true": "on"}.get(text, text)
    if setting not in DENS_SETTINGS:
        raise InputError(f"experiment: dens: {value!r}: expected false, true or no_encoding")
    return setting


@dataclass(frozen=True)
class Arm:
    pretrained: bool
    dens: str = "off"  # off, on, no_encoding
    equal_time: bool = False  # plain training for the wall time of the arm's DeNS twin
    pretrain_time: bool = False  # scratch training for its budget plus the pretraining's wall time

    @property
    def name(self) -> str:
        base = ("pretrained" if self.pretrained else "scratch") + DENS_NAMES[self.dens]
        return base + ("@dens-time" if self.equal_time else "@pretrain-time" if self.pretrain_time else "")

    @property
    def overrides(self) -> list[str]:
        return [f"task.dens.enabled={self.dens != 'off'}", *DENS_SETTINGS[self.dens]]

    @property
    def twins(self) -> tuple[Arm, Arm]:
        """For an equal-time arm: the plain and DeNS arms whose wall times set its budget."""
        return Arm(self.pretrained), Arm(self.pretrained, "on")


COMPUTE_MATCHED = Arm(False, pretrain_time=True).name


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> TransferConfig:
    """The experiment config of ``path`` over the defaults, then ``key=value`` overrides, checked."""
    from omegaconf.errors import OmegaConfBaseException

    from ..config import config_error, load_yaml

    try:
        cfg = OmegaConf.merge(
            OmegaConf.structured(TransferConfig),
            load_yaml(Path(path)),
            OmegaConf.from_dotlist(overrides or []),
        )
    except OmegaConfBaseException as err:
        raise config_error(err, str(path)) from err
    spec: TransferConfig = OmegaConf.to_object(cfg)
    if not spec.sizes or min(spec.sizes) < 1:
        raise InputError(f"{path}: sizes {spec.sizes}: expected training-set sizes of at least 1")
    if not spec.seeds:
        raise InputError(f"{path}: seeds: expected at least one seed")
    if spec.energy_bins < 0:
        raise InputError(f"{path}: energy_bins {spec.energy_bins}: expected 0 (off) or a number of bins")
    spec.dens = [dens_setting(value) for value in spec.dens]
    unknown = [start for start in spec.starts if start not in STARTS]
    if unknown or not spec.starts:
        raise InputError(f"{path}: starts {spec.starts}: expected some of {', '.join(STARTS)}")
    if spec.steps is not None and spec.steps < 1:
        raise InputError(f"{path}: steps {spec.steps}: expected a number of optimizer steps >= 1")
    if spec.equal_time and not {"off", "on"} <= set(spec.dens):
        raise InputError(f"{path}: equal_time needs the arms it matches: dens must hold false and true")
    if spec.compute_matched and not ("off" in spec.dens and set(STARTS) <= set(spec.starts)):
        raise InputError(
            f"{path}: compute_matched needs the arms it matches: starts must hold scratch and pretrained, "
            "dens must hold false"
        )
    return spec


def arms(spec: TransferConfig) -> list[Arm]:
    starts = [start == "pretrained" for start in STARTS if start in spec.starts]
    out = [Arm(pretrained, dens_setting(dens)) for dens in spec.dens for pretrained in starts]
    if spec.equal_time:
        out += [Arm(pretrained, equal_time=True) for pretrained in starts]
    if spec.compute_matched:
        out.append(Arm(False, pretrain_time=True))
    return out


def draw_splits(total: int, spec: TransferConfig, explicit_test: bool) -> tuple[dict, dict[int, np.ndarray]]:
    """Fixed validation and test indices, and per seed a permutation of the remaining pool whose
    first ``n`` entries are the training set of size ``n``."""
    order = np.random.default_rng(spec.split_seed).permutation(total)
    n_test = 0 if explicit_test else spec.test
    needed = n_test + spec.validation + max(spec.sizes)
    if needed > total:
        raise InputError(
            f"experiment: {spec.validation} validation + {n_test} test + {max(spec.sizes)} training "
            f"structures need {needed}, the data has {total}"
        )
    fixed = {"val": np.sort(order[n_test : n_test + spec.validation])}
    if n_test:
        fixed["test"] = np.sort(order[:n_test])
    pool = order[n_test + spec.validation :]
    pools = {seed: np.random.default_rng([spec.split_seed, seed]).permutation(pool) for seed in spec.seeds}
    return fixed, pools
