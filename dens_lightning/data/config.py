"""The ``data`` section of a run's config: its schema and its own checks (choices from the modules
that own them: neighbour backends, sampling methods, labellers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from ..errors import InputError, one_of
from .neighbors import BACKENDS
from .qm9 import METHODS as QM9_METHODS
from .sampling import LABELLERS, METHODS

SOURCES = ("embedded", "qm9")  # data.source: what trains when no file is given


@dataclass
class EmbeddedDataConfig:
    """The default data set the package samples with RDKit and caches when no file is given."""

    smiles: list[str] = field(
        default_factory=lambda: ["CCO", "CC(=O)O", "O=CC=CO", "c1ccccc1O", "CC(=O)Nc1ccccc1", "NCC(=O)O"]
    )
    smiles_file: str | None = None  # a SMILES file instead of `smiles`; "bundled": the packaged list
    limit: int | None = None  # use only the first `limit` molecules
    conformers: int = 4  # RDKit ETKDG conformers per molecule
    samples: int = 20  # sampled structures per conformer
    method: str = "perturb"  # normal-mode, md, perturb
    temperature: float = 300.0  # K, for normal-mode and md
    displacement: float = 0.03  # Å, std of the Cartesian perturbation (method perturb)
    labeller: str = "auto"  # auto (xtb when tblite is installed, else mmff), xtb, mmff, none
    seed: int = 7


@dataclass
class Qm9DataConfig:
    """Non-equilibrium conformations around the 130,831 QM9 DFT minima (``qm9pack``)."""

    molecules: int | None = None  # use the first N molecules (in a seeded order); null: all
    samples: int = 4  # conformations per molecule
    method: str = "normal-mode"  # normal-mode (MMFF94 Hessian, sampled once and cached), perturb (on the fly)
    temperature: float = 500.0  # K, for normal-mode
    displacement: float = 0.05  # Å, std of the Gaussian displacement (perturb)
    labeller: str = "none"  # normal-mode: none, xtb, mmff, auto (labels for supervised and dens pretraining)
    seed: int = 11


@dataclass
class DataConfig:
    path: str | None = None  # one file, split by `split`
    train: str | None = None  # or explicit files; val is carved from train when absent
    val: str | None = None
    test: str | None = None
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # fractions, or counts
    batch_size: int = 32
    eval_batch_size: int | None = None  # defaults to batch_size
    num_workers: int = 0
    units: str = "auto"  # energy unit (and length unit) of the files: "kcal/mol", "Hartree, Bohr", ...
    energy_key: str | None = None
    forces_key: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # npz/h5 array names: numbers, positions
    neighbor_backend: str = "auto"  # auto, cdist, vesin, torch_cluster
    min_distance: float = 0.5  # Å: atoms closer than this in a file are an error (overlap or wrong unit)
    source: str = "embedded"  # with no file: embedded (RDKit-sampled), qm9 (needs the qm9 extra)
    qm9: Qm9DataConfig = field(default_factory=Qm9DataConfig)
    embedded: EmbeddedDataConfig = field(default_factory=EmbeddedDataConfig)


def data_checks(data: DictConfig) -> list[tuple[str, bool, str]]:
    """(key, whether its value is acceptable, what is expected) for each checked ``data`` key."""
    embedded, qm9 = data.embedded, data.qm9
    return [
        ("data.batch_size", data.batch_size >= 1, "an integer >= 1"),
        ("data.num_workers", data.num_workers >= 0, "an integer >= 0"),
        ("data.min_distance", data.min_distance >= 0, "a length in Å >= 0"),
        (
            "data.split",
            len(data.split) in (2, 3) and all(x >= 0 for x in data.split),
            "2 or 3 non-negative fractions or counts (train, val[, test])",
        ),
        ("data.neighbor_backend", data.neighbor_backend in BACKENDS, one_of(BACKENDS)),
        ("data.embedded.labeller", embedded.labeller in LABELLERS, one_of(LABELLERS)),
        ("data.embedded.method", embedded.method in METHODS, one_of(METHODS)),
        ("data.embedded.temperature", embedded.temperature > 0, "a temperature in K > 0"),
        ("data.embedded.samples", embedded.samples >= 1, "an integer >= 1"),
        ("data.embedded.conformers", embedded.conformers >= 1, "an integer >= 1"),
        ("data.source", data.source in SOURCES, one_of(SOURCES)),
        ("data.qm9.samples", qm9.samples >= 1, "an integer >= 1"),
        ("data.qm9.displacement", qm9.displacement > 0, "a length in Å > 0"),
        ("data.qm9.method", qm9.method in QM9_METHODS, one_of(QM9_METHODS)),
        ("data.qm9.temperature", qm9.temperature > 0, "a temperature in K > 0"),
        (
            "data.qm9.labeller",
            qm9.labeller == "none" or (qm9.labeller in LABELLERS and qm9.method == "normal-mode"),
            one_of(LABELLERS) + " (labels need data.qm9.method=normal-mode)",
        ),
    ]


def uses_default_data(data: DictConfig) -> bool:
    """Whether the run trains on ``data.source`` (no ``data.path`` or ``data.train`` file given)."""
    return not (data.path or data.train)


def check_embedded_smiles(data: DictConfig) -> None:
    """The embedded set's molecules come from one of ``smiles`` and ``smiles_file``."""
    embedded = data.embedded
    if embedded.smiles and embedded.smiles_file:
        raise InputError(
            f"config: data.embedded.smiles and data.embedded.smiles_file={embedded.smiles_file!r} are both "
            "set; give one (add data.embedded.smiles_file=null to use the SMILES list)"
        )
    if (
        data.source == "embedded"
        and uses_default_data(data)
        and not embedded.smiles
        and not embedded.smiles_file
    ):
        raise InputError(
            "config: data.embedded.smiles is empty and data.embedded.smiles_file is null; give one"
        )
