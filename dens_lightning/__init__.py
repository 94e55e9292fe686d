"""dens_lightning: denoising pretraining and DeNS finetuning of interatomic potentials."""

from .version import __version__


def __getattr__(name: str):
    """``load_model`` (:func:`.artifacts.load_model`), imported on first use: ``import dens_lightning``
    and the command line's ``--help`` stay free of torch."""
    if name == "load_model":
        from .artifacts import load_model

        return load_model
    raise AttributeError(f"module 'dens_lightning' has no attribute {name!r}")


__all__ = ["__version__", "load_model"]
