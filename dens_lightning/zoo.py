"""Pretrained models shipped inside the package, named ``zoo:NAME`` wherever a model path is taken
(``finetune --from``, ``load_model``, ``DensCalculator``, ``test``, ``info``, ``export``).

The zoo is a folder holding ``index.json`` and the model files it lists: the package's own
(``dens_lightning/zoo_files``), or ``$DENS_LIGHTNING_ZOO``. Each entry records its file's size and
SHA-256; a file is checked against them before it is read, so a damaged or replaced file is refused
with one line. ``index.json`` also records the command that rebuilds each entry from nothing.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .files import file_sha256

PREFIX = "zoo:"
PACKAGED = Path(__file__).resolve().parent / "zoo_files"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    file: str  # in the zoo folder
    sha256: str
    size_bytes: int
    rebuild: str  # the command that makes the file from nothing
    description: str = ""
    pretraining_seconds: float | None = None  # wall time of the build (compute-matched comparisons)


def directory() -> Path:
    """The zoo folder: ``$DENS_LIGHTNING_ZOO``, else the package's ``zoo_files``."""
    return Path(os.environ.get("DENS_LIGHTNING_ZOO") or PACKAGED)


def entries() -> list[ZooEntry]:
    """Every entry of the zoo's ``index.json`` (none when the folder has no index)."""
    index = directory() / "index.json"
    if not index.exists():
        return []
    try:
        return [ZooEntry(**item) for item in json.loads(index.read_text())["models"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{index}: not a zoo index ({err})") from err


def is_zoo(spec: str | os.PathLike) -> bool:
    return str(spec).startswith(PREFIX)


def entry(name: str) -> ZooEntry:
    """The entry called ``name`` (with or without ``zoo:``)."""
    name = str(name).removeprefix(PREFIX)
    known = entries()
    for item in known:
        if item.name == name:
            return item
    names = ", ".join(item.name for item in known) or "none"
    raise InputError(f"zoo:{name}: no such model in {directory()} (shipped: {names})")


def model_path(spec: str | os.PathLike) -> Path:
    """The checked file of ``zoo:NAME``: present, of the recorded size and SHA-256."""
    item = entry(str(spec))
    path = directory() / item.file
    if not path.is_file():
        raise InputError(
            f"zoo:{item.name}: {path} is missing; reinstall the package or rebuild it: {item.rebuild}"
        )
    size, digest = path.stat().st_size, file_sha256(path)
    if size != item.size_bytes or digest != item.sha256:
        raise InputError(
            f"zoo:{item.name}: {path} is damaged (SHA-256 {digest[:12]}…, recorded {item.sha256[:12]}…); "
            f"reinstall the package or rebuild it: {item.rebuild}"
        )
    return path


def add_entry(
    name: str,
    model_file: str | os.PathLike,
    rebuild: str,
    description: str = "",
    pretraining_seconds: float | None = None,
) -> ZooEntry:
    """Copy ``model_file`` into the zoo folder as ``NAME.safetensors`` and record it in ``index.json``
    (replacing an entry of that name), both written atomically. ``pretraining_seconds``: the wall time
    the pretraining took, which ``experiment transfer`` gives a compute-matched scratch arm."""
    from .artifacts import read_metadata
    from .files import replacing, write_json_atomic

    read_metadata(model_file)  # a dens_lightning model file, or one clear line
    folder = directory()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.safetensors"
    with replacing(target) as tmp:
        tmp.write_bytes(Path(model_file).read_bytes())
    item = ZooEntry(
        name,
        target.name,
        file_sha256(target),
        target.stat().st_size,
        rebuild,
        description,
        pretraining_seconds,
    )
    kept = [asdict(other) for other in entries() if other.name != name]
    write_json_atomic(
        folder / "index.json", {"models": sorted([*kept, asdict(item)], key=lambda e: e["name"])}
    )
    return item


def describe(item: ZooEntry) -> dict[str, Any]:
    """What ``python -m dens_lightning zoo`` lists of an entry, from its checked file's metadata."""
    from safetensors import safe_open

    from .artifacts import read_metadata
    from .card import data_description

    path = model_path(item.name)
    metadata = read_metadata(path)
    backbone = metadata["backbone"]
    with safe_open(str(path), framework="pt") as handle:
        keys = [key for key in handle.keys() if key.startswith("backbone.")]  # noqa: SIM118 (not a dict)
        shapes = [handle.get_slice(key).get_shape() for key in keys]
    return {
        "name": f"{PREFIX}{item.name}",
        "backbone": backbone["name"],
        "hyperparameters": backbone["hyperparameters"],
        "backbone_parameters": sum(math.prod(shape) for shape in shapes),
        "pretraining_data": data_description(metadata.get("data") or {}),
        "objective": metadata.get("objective"),
        "steps": metadata.get("steps"),
        "validation": metadata.get("validation"),
        "file_mb": round(item.size_bytes / 2**20, 2),
        "sha256": item.sha256,
        "description": item.description,
        "rebuild": item.rebuild,
        "pretraining_seconds": item.pretraining_seconds,
    }


def table(described: list[dict[str, Any]]) -> str:
    """The zoo as an aligned text table (``describe`` of each entry)."""
    if not described:
        return f"no models in {directory()}"
    header = ("name", "backbone", "parameters", "objective", "steps", "val. force MAE", "MB", "sha256")
    rows = [header]
    for item in described:
        forces = (item["validation"] or {}).get("forces_mae_meV_per_A")
        rows.append(
            (
                item["name"],
                item["backbone"],
                f"{item['backbone_parameters']:,}",
                str(item["objective"]),
                str(item["steps"]),
                f"{forces:.1f} meV/A" if forces is not None else "-",
                f"{item['file_mb']:.1f}",
                item["sha256"][:12],
            )
        )
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    data = [f"{item['name']}: {item['pretraining_data']}" for item in described]
    return "\n".join([*lines, "", "pretraining data:", *data, "", "use: finetune --from zoo:NAME"])
