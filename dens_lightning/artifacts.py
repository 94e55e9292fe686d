"""Shareable model files: ``model.safetensors`` = weights + JSON metadata, loaded without pickle.

The metadata (under the header key ``dens_lightning``) holds the backbone name and hyperparameters,
cutoff, elements seen, energy references and scale, units, stage, package version and data
provenance; loading rebuilds the registered backbone from it, so no code travels in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .files import json_text, replacing
from .models.potential import Potential
from .run_directory import MODEL_FILE, RunDirectory
from .version import __version__
from .zoo import is_zoo
from .zoo import model_path as zoo_model_path

METADATA_KEY = "dens_lightning"
FORMAT_VERSION = 1
PARTS = ("backbone", "energy_head", "force_encoder")  # what finetune --from can take from a model file


def _backbone_metadata(backbone, stage: str, provenance: dict | None) -> dict:
    """What every model file records, whatever its stage."""
    return {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "stage": stage,
        "backbone": {"name": backbone.name, "hyperparameters": backbone.hyperparameters()},
        "cutoff": backbone.cutoff,
        "dtype": str(next(backbone.parameters()).dtype).replace("torch.", ""),
        "data": provenance or {},
    }


def model_metadata(potential: Potential, stage: str, provenance: dict | None = None, **extra: Any) -> dict:
    head = potential.energy_head
    shift = {int(z): float(v) for z, v in enumerate(head.shift.tolist()) if v != 0.0}
    elements = sorted(set(shift) | set(extra.pop("elements", [])))
    scale = head.scale.detach()
    return {
        **_backbone_metadata(potential.backbone, stage, provenance),
        "elements": elements,
        "energy_references_eV": {str(z): v for z, v in shift.items()},
        "energy_scale_eV": float(scale[elements].mean() if elements else scale.mean()),
        "units": {"energy": "eV", "length": "Å", "forces": "eV/Å"},
        **extra,
    }


def pretrain_metadata(backbone, provenance: dict | None = None, **extra: Any) -> dict:
    """Metadata of a denoising-pretrained backbone file (stage ``pretrain``, objective ``denoise``:
    backbone and noise head, no energy head)."""
    return {
        **_backbone_metadata(backbone, "pretrain", provenance),
        "objective": "denoise",
        "units": {"length": "Å"},
        **extra,
    }


def has_energy_head(metadata: dict) -> bool:
    """Whether a model file holds an energy head: every file but a denoising-pretrained backbone
    (files without ``objective`` predate the supervised and DeNS pretraining objectives)."""
    return metadata.get("stage") != "pretrain" or metadata.get("objective", "denoise") != "denoise"


def save_model(
    module: torch.nn.Module | None,
    path: str | Path,
    metadata: dict,
    parts: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Write ``module``'s weights and ``metadata`` atomically (a temporary file, then a rename);
    ``parts``: further modules stored under their name as prefix (e.g. ``force_encoder``)."""
    from safetensors.torch import save_file

    state = dict(module.state_dict()) if module is not None else {}
    for prefix, part in (parts or {}).items():
        state |= {f"{prefix}.{name}": t for name, t in part.state_dict().items()}
    tensors = {name: t.detach().contiguous().cpu() for name, t in state.items()}
    with replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json_text(metadata, sort_keys=True)})
    return Path(path)


def read_metadata(path: str | Path) -> dict:
    """The metadata of a model file, without loading its weights."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"{path}: not a safetensors model file ({err})") from err
    if METADATA_KEY not in header:
        raise InputError(f"{path}: has no dens_lightning metadata; was it written by dens_lightning?")
    metadata = json.loads(header[METADATA_KEY])
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{path}: written by dens_lightning {metadata.get('package_version')} (format "
            f"{metadata['format_version']}); this is {__version__}: upgrade the package"
        )
    for key in ("backbone", "cutoff"):
        if key not in metadata:
            raise InputError(f"{path}: metadata lacks {key!r}; the file is incomplete")
    return metadata


def _registered(path: str | Path, metadata: dict) -> str:
    from .models import BACKBONES

    name = metadata["backbone"]["name"]
    if name not in BACKBONES:
        raise InputError(
            f"{path}: backbone {name!r} is not available here (have: {', '.join(sorted(BACKBONES))})"
        )
    return name


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, named without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_parts(path: str | Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Metadata and the tensors of each part of any model file, pretrained or finetuned: ``backbone``,
    ``energy_head`` and the DeNS ``force_encoder`` (empty where the file has none), named without
    their prefix."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    _registered(path, metadata)
    tensors = load_file(str(path), device="cpu")
    parts = {prefix: with_prefix(tensors, f"{prefix}.") for prefix in PARTS}
    if not parts["backbone"]:
        raise InputError(f"{path}: holds no backbone tensors")
    return metadata, parts


def load_potential(path: str | Path, device: str | torch.device = "cpu") -> Potential:
    """Rebuild the model of a ``model.safetensors`` file (no pickle involved)."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    name = _registered(path, metadata)
    if not has_energy_head(metadata):
        raise InputError(
            f"{path}: a denoising-pretrained backbone without an energy head; finetune it first "
            f"(python -m dens_lightning finetune --from {path})"
        )
    potential = Potential.build(name, metadata["backbone"]["hyperparameters"], metadata=metadata)
    tensors = load_file(str(path), device="cpu")
    state = {k: v for k, v in tensors.items() if not k.startswith("force_encoder.")}
    dtype = next(iter(state.values())).dtype if state else torch.float32
    potential.to(dtype)
    missing, unexpected = potential.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path}: weights do not match backbone {name!r} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return potential.to(device).eval()


def resolve_model_path(path: str | Path) -> Path:
    """A run directory → its ``model.safetensors``; ``zoo:NAME`` → the shipped file, checked against
    its recorded SHA-256 (:mod:`.zoo`); a file stays as it is."""
    if is_zoo(path):
        return zoo_model_path(path)
    path = Path(path)
    if path.is_dir():
        candidate = RunDirectory(path).model
        if not candidate.exists():
            raise InputError(f"{path}: run directory without {MODEL_FILE}")
        return candidate
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    return path


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint read with ``weights_only=True``: no code in it can run."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"{path}: not a loadable checkpoint with weights_only=True ({type(err).__name__})"
        ) from err


def load_model(path: str | Path, device: str = "cpu") -> Potential:
    """Load a ``model.safetensors`` file (or a run directory holding one) for inference or finetuning.

    Returns a :class:`~dens_lightning.models.potential.Potential` with ``.backbone`` and ``.metadata``;
    call it on a batch (``Graph``) for ``energy`` (eV) and ``forces`` (eV/Å).
    """
    return load_potential(resolve_model_path(path), device=device)
