"""Replay against forgetting (``finetune.replay``): every training step of a finetune also fits the
energies and forces of a batch of labelled structures of other molecules, by default the packaged
pretraining set labelled as the pretrained model was, so the model keeps what pretraining taught it
(the idea of MACE's multihead replay finetuning, here with one head).

The replay labels may come from another level of theory than the new data (GFN2-xTB beside DFT):
total energies then differ by per-element constants. Before the first step, per-element offsets are
fitted on the model's energy residuals on the replay set, ``o_z`` minimising
``Σ (E_replay - E_model - Σ_i o_{z_i})²`` (as a warm start refits its references on the new data),
and added to the model's replay energies; forces need none. The offsets are saved with the
checkpoints, so a resumed run goes on with them.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from .config import load_config
from .data.replay import PRETRAINING, ReplayBatches, replay_structures
from .data.statistics import reference_energies, statistics_sample
from .errors import InputError
from .evaluation import predict_energies

log = logging.getLogger("dens_lightning")


def attach_replay(task, cfg: DictConfig, resumed: bool, device: torch.device | str = "cpu") -> None:
    """With ``finetune.replay.weight > 0``: read the replay set, attach its batches to the finetune
    ``task`` and (unless ``resumed``: the checkpoint holds them) fit its energy offsets on the task's
    model as it starts."""
    replay_cfg = cfg.finetune.replay
    if replay_cfg.weight == 0:
        return
    pretraining = None  # the packaged pretraining recipe, read only where it is the replay set
    if replay_cfg.data == PRETRAINING:
        pretraining = OmegaConf.to_container(load_config("pretrain").data.embedded, resolve=True)
    structures = replay_structures(replay_cfg, pretraining)
    max_z = task.potential.backbone.config.max_z
    if max(structures.elements) > max_z:
        raise InputError(
            f"{replay_cfg.data}: finetune.replay.data holds atomic number {max(structures.elements)}, "
            f"above model.max_z={max_z}"
        )
    task.replay = ReplayBatches(structures, replay_cfg.batch_size, cfg.seed)
    if not resumed:
        fitted = statistics_sample(structures, cfg.seed)
        with torch.random.fork_rng(devices=[]):  # a loader's seed draw would shift the run's data order
            predicted = predict_energies(task.potential.to(device), fitted, 64, device)
        offsets = reference_energies(fitted, fitted.energy - predicted)
        task.replay_offsets.zero_()
        for z, offset in offsets.items():
            task.replay_offsets[z] = offset
    log.info("replay: %d structures of %s, weight %g", len(structures), replay_cfg.data, replay_cfg.weight)
