"""Logging a task's loss terms and epoch means to Lightning's loggers."""

from __future__ import annotations


def log_parts(module, prefix: str, parts: dict, batch_size: int, prog_bar=("loss", "cosine")) -> None:
    """Log each training term as ``prefix/name``, per step and as an epoch mean. The values are
    already means over every device (see :func:`.reduction.combine`), so nothing is synced here."""
    for name, value in parts.items():
        module.log(
            f"{prefix}/{name}",
            value,
            batch_size=batch_size,
            on_step=True,
            on_epoch=True,
            prog_bar=name in prog_bar,
        )


def log_epoch_means(module, prefix: str, means: dict[str, float], prog_bar=()) -> None:
    """Log means that an accumulator already added over the epoch and every device."""
    for name, value in means.items():
        module.log(f"{prefix}/{name}", value, prog_bar=name in prog_bar)
