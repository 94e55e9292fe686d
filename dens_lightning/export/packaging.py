"""Writing exported files (``pt2`` or ``aoti``) with the model's metadata, checking them against the
eager model, and the cache of compiled files behind ``DensCalculator(compile=True)``."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

from ..errors import InputError
from ..files import replacing
from ..models.potential import Potential
from .runtime import METADATA_FILE, ExportedModel
from .tracing import INPUT_NAMES, model_elements, random_molecules, trace

log = logging.getLogger("dens_lightning")
FORMATS = ("pt2", "aoti")


def export_model(
    potential: Potential, out: str | Path, format: str = "pt2", device: str | torch.device = "cpu"
) -> Path:
    """Write ``potential`` to ``out`` in ``format`` (``pt2`` or ``aoti``), atomically."""
    if format not in FORMATS:
        raise InputError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    program = trace(potential, device)
    # what predict needs, also for a Potential built in code (whose metadata may be empty)
    essentials = {
        "cutoff": potential.cutoff,
        "dtype": str(next(potential.parameters()).dtype).removeprefix("torch."),
    }
    metadata = json.dumps({**essentials, **potential.metadata, "export": export_description(format, device)})
    buffer = io.BytesIO()  # torch wants a name ending in .pt2 or a buffer; the temporary is neither
    if format == "pt2":
        torch.export.save(program, buffer, extra_files={METADATA_FILE: metadata})
    else:
        from torch._inductor import aoti_compile_and_package

        configs = {"aot_inductor.metadata": {METADATA_FILE: metadata}}
        aoti_compile_and_package(program, package_path=buffer, inductor_configs=configs)
    with replacing(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(out)


def check_batch(elements: Sequence[int]) -> list[Atoms]:
    """Structures unlike the tracing example, of the given elements: other sizes, an atom alone, a
    periodic cell."""
    from ase.build import bulk

    images = random_molecules(elements, (1, 4, 9, 14), seed=1)
    crystal = bulk("C", "diamond", a=3.57).repeat((2, 1, 1))
    crystal.numbers = [elements[k % len(elements)] for k in range(len(crystal))]
    crystal.rattle(0.05, seed=1)
    return [*images, crystal]


def export_and_check(
    potential: Potential, out: str | Path, format: str = "pt2", device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Export, load the file back, and compare it with the eager model on :func:`check_batch`; a
    difference beyond 1e-5 (eV, eV/Å, relative to the values' size where the dtype cannot resolve
    1e-5) is an error. Returns what was written and the differences found."""
    path = export_model(potential, out, format, device)
    images = check_batch(model_elements(potential))
    got = ExportedModel(path).predict(images)
    want = potential(images, compute_virial=True)
    report = {"out": str(path), "format": format, "device": str(device), "checked_structures": len(images)}
    eps = torch.finfo(want["forces"].dtype).eps  # the model's arithmetic (energies are float64 sums)
    for key, unit in (("energy", "eV"), ("forces", "eV/A"), ("virial", "eV")):
        difference = float((got[key] - want[key]).abs().max())
        allowed = 1e-5 + 64 * eps * float(want[key].abs().max())
        report[f"max_abs_difference_{key}_{unit}"] = difference
        if not difference <= allowed:
            path.unlink()
            raise InputError(
                f"{path}: exported {key} differ from the eager model's by {difference:.3g} {unit}"
            )
    return report


def export_description(format: str, device: str | torch.device) -> dict[str, Any]:
    return {
        "format": format,
        "device": str(device),
        "torch_version": torch.__version__,
        "inputs": list(INPUT_NAMES),
        "outputs": ["energy", "forces", "virial"],
    }


def has_cxx_compiler() -> bool:
    """Whether AOTInductor can compile here: ``$CXX``, or c++, g++ or clang++ on PATH."""
    return bool(os.environ.get("CXX")) or any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def cache_directory() -> Path:
    """Where :func:`compiled` keeps its files: ``$DENS_LIGHTNING_CACHE``, else
    ``$XDG_CACHE_HOME/dens_lightning``, else ``~/.cache/dens_lightning``."""
    if os.environ.get("DENS_LIGHTNING_CACHE"):
        return Path(os.environ["DENS_LIGHTNING_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dens_lightning"


def fingerprint(potential: Potential, device: str | torch.device) -> str:
    """SHA-256 of what a compiled file depends on: the weights and buffers, the backbone and its
    hyperparameters, the metadata, the device and the torch and package versions."""
    from ..version import __version__

    digest = hashlib.sha256()
    header = {
        "backbone": potential.backbone.name,
        "config": potential.backbone.hyperparameters(),
        "metadata": potential.metadata,
        "device": str(torch.device(device)),
        "torch": torch.__version__,
        "dens_lightning": __version__,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, value in sorted(potential.state_dict().items()):
        digest.update(f"{name} {value.dtype} {tuple(value.shape)}".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compiled(
    potential: Potential, device: str | torch.device = "cpu", directory: str | Path | None = None
) -> Path:
    """The AOTInductor file of ``potential`` on ``device``: compiled and checked against the eager
    model (:func:`export_and_check`) the first time, then found in the cache by :func:`fingerprint`.
    ``directory``: the cache (default :func:`cache_directory`)."""
    path = Path(directory or cache_directory()) / "aoti" / f"{fingerprint(potential, device)}.pt2"
    if not path.exists():
        if not has_cxx_compiler():
            raise InputError("compile=True needs a C++ compiler (c++, g++ or clang++ on PATH, or $CXX)")
        log.info("compiling the model for %s once (cached as %s)", device, path)
        export_and_check(potential, path, "aoti", device)
    return path
