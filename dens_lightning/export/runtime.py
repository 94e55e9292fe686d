"""Exported files loaded back in Python: a ``pt2`` program or an ``aoti`` package, with its metadata."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from torch import Tensor

from ..data.atoms import atoms_graph
from ..errors import InputError
from .tracing import graph_inputs

METADATA_FILE = "dens_lightning.json"  # the extra file of a pt2 program / the metadata key of an aoti package


class ExportedModel:
    """An exported file loaded back in Python: ``metadata``, the raw function (``fn``), and
    :meth:`predict` for ASE structures (neighbour lists built here, as for the eager model)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{path}: exported model not found")
        try:
            self.fn, metadata = _load(self.path)
            self.metadata: dict[str, Any] = json.loads(metadata)
            export = self.metadata["export"]
        except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: not a dens_lightning export ({err})") from err
        self.device = torch.device(export["device"])
        self.dtype = getattr(torch, self.metadata.get("dtype", "float32"))

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    def __call__(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.fn(*inputs)

    def predict(self, images: Atoms | Sequence[Atoms]) -> dict[str, Tensor]:
        """``energy`` [B] (eV), ``forces`` [N, 3] (eV/Å) and ``virial`` [B, 3, 3] (eV) of ASE structures."""
        from ..data.neighbors import with_neighbors

        graph = with_neighbors(atoms_graph(images, self.dtype), self.cutoff).to(self.device)
        energy, forces, virial = self(*graph_inputs(graph))
        return {"energy": energy, "forces": forces, "virial": virial}


def _load(path: Path):
    """The callable and the metadata JSON of a pt2 program or an aoti package."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith(".so") or "/aotinductor/" in name for name in names):
        from torch._inductor import aoti_load_package

        package = aoti_load_package(str(path))
        return package, package.get_metadata()[METADATA_FILE]
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError("no dens_lightning metadata")
    return program.module(), extra[METADATA_FILE]
