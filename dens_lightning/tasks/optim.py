"""AdamW with linear warm-up, then a cosine decay or a plateau schedule (shared by every task)."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

SCHEDULERS = ("cosine", "plateau", "none")  # task.scheduler


def param_groups(module: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float) -> list[dict]:
    """The backbone at ``lr * backbone_lr_scale``, everything else at ``lr``; frozen parameters left out."""
    backbone_ids = {id(p) for p in backbone.parameters()}
    groups = [
        {
            "params": [p for p in backbone.parameters() if p.requires_grad],
            "lr": lr * backbone_lr_scale,
            "name": "backbone",
        },
        {
            "params": [p for p in module.parameters() if p.requires_grad and id(p) not in backbone_ids],
            "lr": lr,
            "name": "heads",
        },
    ]
    return [g for g in groups if g["params"] and g["lr"] > 0]


def total_steps(module) -> int:
    """The optimizer steps the module's trainer will take: 1 outside a trainer, 0 when training is
    unbounded (``trainer.max_epochs=-1``, ended by a callback such as a wall-clock budget)."""
    if module._trainer is None:
        return 1
    steps = module.trainer.estimated_stepping_batches
    return int(steps) if math.isfinite(steps) else 0


FUSED_DEVICES = ("cpu", "cuda")


def fused_supported(groups: list[dict]) -> bool:
    """Whether every parameter is a floating-point tensor on a device with a fused AdamW kernel: one
    kernel for all parameters (on the CPU much faster than the per-tensor loop, which torch picks
    there by default; CHANGELOG.md, Performance history)."""
    params = [p for group in groups for p in group["params"]]
    return all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)


def configure(module, groups: list[dict], task_cfg) -> dict:
    """The dict Lightning's ``configure_optimizers`` returns.

    The cosine schedule asks for the number of training steps only once training runs: asking
    Lightning earlier (here) builds the training loader before a resumed run's progress is restored,
    and that loader would start the interrupted epoch's order from the beginning."""
    optimizer = torch.optim.AdamW(groups, weight_decay=task_cfg.weight_decay, fused=fused_supported(groups))
    warmup = max(int(task_cfg.warmup_steps), 0)
    if task_cfg.scheduler == "cosine":
        floor = task_cfg.min_lr_ratio
        decay_steps = functools.cache(lambda: max(total_steps(module) - warmup, 1))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if step == 0:  # no warm-up: the first step, at the peak (before training starts)
                return 1.0
            progress = min((step - warmup) / decay_steps(), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    schedulers = []
    if warmup:
        linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, total_iters=warmup)
        schedulers.append({"scheduler": linear, "interval": "step"})
    if task_cfg.scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=task_cfg.plateau_factor, patience=task_cfg.plateau_patience
        )
        schedulers.append({"scheduler": plateau, "interval": "epoch", "monitor": "val/loss"})
    if not schedulers:
        return {"optimizer": optimizer}
    return [optimizer], schedulers
