"""Export a model for use outside Python: one ahead-of-time graph of energy, forces and virial.

The exported function takes a batch with its neighbour list already built (as MD codes provide it)::

    energy [B], forces [N, 3], virial [B, 3, 3] = f(z [N] int64, pos [N, 3], cell [B, 3, 3],
                                                   batch [N] int64, edge_index [2, E] int64,
                                                   edge_shift [E, 3])

Units Å and eV; ``edge_index`` holds (neighbour j, centre i) pairs within the cutoff, both directions,
and the vector from i to j is ``pos[j] - pos[i] + edge_shift`` (as in
:class:`~dens_lightning.data.graph.Graph`);
``forces = -dE/dpos``, ``virial = -dE/dε`` (stress = -virial / volume). The number of atoms, edges
and structures is free; dtype and device are the model's.

How: the forward pass and its gradient are traced together into aten operations with symbolic
shapes (``make_fx``; ``torch.export`` cannot yet trace ``autograd.grad`` itself), then that graph is
exported. Formats:

- ``pt2``: a ``torch.export`` program (``torch.export.load(path).module()``); portable, no compiler.
- ``aoti``: AOTInductor, compiled ahead of time into a package that C++ loads with
  ``torch::inductor::AOTIModelPackageLoader`` and Python with ``torch._inductor.aoti_load_package``
  (needs a C++ compiler at export time; CUDA packages need ``--device cuda``).

The model's metadata (cutoff, elements, units, ...) travels inside either file as JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from torch import Tensor, nn

from .data.atoms import atoms_graph
from .data.graph import Graph
from .errors import InputError
from .files import replacing
from .models.potential import Potential

log = logging.getLogger("dens_lightning")
FORMATS = ("pt2", "aoti")
METADATA_FILE = "dens_lightning.json"  # the extra file of a pt2 program / the metadata key of an aoti package
INPUT_NAMES = ("z", "pos", "cell", "batch", "edge_index", "edge_shift")


class ForceField(nn.Module):
    """The exported signature around a :class:`Potential` (see the module docstring)."""

    def __init__(self, potential: Potential):
        super().__init__()
        self.potential = potential

    def forward(
        self, z: Tensor, pos: Tensor, cell: Tensor, batch: Tensor, edge_index: Tensor, edge_shift: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        num_structures = cell.shape[0]
        graph = Graph(
            z=z,
            pos=pos,
            batch=batch,
            ptr=torch.zeros(num_structures + 1, dtype=torch.long, device=z.device),  # only its size is read
            cell=cell,
            pbc=torch.zeros(num_structures, 3, dtype=torch.bool, device=z.device),  # not read: edges given
            edge_index=edge_index,
            edge_shift=edge_shift,
        )
        out = self.potential.evaluate(graph, compute_forces=True, create_graph=False, compute_virial=True)
        return out["energy"], out["forces"], out["virial"]


def graph_inputs(graph: Graph) -> tuple[Tensor, ...]:
    """A batch with its neighbour list as the exported function's inputs, in order."""
    if graph.edge_index is None:
        raise ValueError("build the neighbour list first (Potential.prepare)")
    return graph.z, graph.pos, graph.cell, graph.batch, graph.edge_index, graph.edge_shift


def model_elements(potential: Potential) -> list[int]:
    """The elements the model was trained on (H, C, O where its metadata does not say)."""
    return list(potential.metadata.get("elements") or [1, 6, 8])


def random_molecules(elements: Sequence[int], sizes: Sequence[int], seed: int) -> list[Atoms]:
    """Compact random molecules of the given sizes, their atoms cycling through ``elements``."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for n in sizes:
        box = 1.5 * n ** (1 / 3) + 1.0
        positions = torch.rand(n, 3, generator=generator, dtype=torch.float64) * box
        images.append(Atoms(numbers=[elements[k % len(elements)] for k in range(n)], positions=positions))
    return images


def example_batch(potential: Potential, device: torch.device) -> Graph:
    """Two small molecules of the model's elements: the tracing example. Their sizes only seed the
    symbolic shapes, which stay free."""
    images = random_molecules(model_elements(potential), (5, 7), seed=0)
    dtype = next(potential.parameters()).dtype
    return potential.prepare(atoms_graph(images, dtype).to(device))


def trace(potential: Potential, device: str | torch.device = "cpu") -> torch.export.ExportedProgram:
    """The model's energy, forces and virial as a ``torch.export`` program with free sizes."""
    import torch.fx.experimental._config as fx_config
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    device = torch.device(device)
    module = ForceField(potential.to(device).eval())
    example = graph_inputs(example_batch(potential, device))
    recompute = potential.backbone.recompute_blocks  # a traced graph holds every operation once
    potential.recompute_blocks(False)
    # no duck sizing: a size that happens to equal another (2 structures, 2 rows of edge_index) must
    # not be tied to it
    try:
        with torch.enable_grad(), fx_config.patch(use_duck_shape=False):
            traced = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    finally:
        potential.recompute_blocks(recompute)
    atoms, edges, structures = Dim("atoms", min=1), Dim("edges", min=1), Dim("structures", min=1)
    shapes = ({0: atoms}, {0: atoms}, {0: structures}, {0: atoms}, {1: edges}, {0: edges})
    return torch.export.export(traced, example, dynamic_shapes=shapes, strict=False)


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
    eps = torch.finfo(got["energy"].dtype).eps
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
    from .version import __version__

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
        from .data.neighbors import with_neighbors

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
