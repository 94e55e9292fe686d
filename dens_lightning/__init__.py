"""dens_lightning: denoising pretraining and DeNS finetuning of interatomic potentials."""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu"):
    """Load a ``model.safetensors`` file (or a run directory holding one) for inference or finetuning.

    Returns a :class:`~dens_lightning.models.potential.Potential` with ``.backbone`` and ``.metadata``;
    call it on a batch (``Graph``) for ``energy`` (eV) and ``forces`` (eV/Å).
    """
    from .artifacts import load_potential, resolve_model_path

    return load_potential(resolve_model_path(path), device=device)


__all__ = ["__version__", "load_model"]
