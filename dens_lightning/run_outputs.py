"""What a finished run writes into its directory (:class:`.run_directory.RunDirectory`): the model
file with its metadata (how the model was trained travels with it), the model card and the test
metrics."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from .artifacts import model_metadata, pretrain_metadata, save_model
from .config import dens_auxiliary
from .data.datamodule import AtomsDataModule
from .evaluation import evaluate_structures
from .files import write_json_atomic, write_text_atomic
from .run_directory import RunDirectory


def write_card(run_dir: RunDirectory, metadata: dict) -> None:
    """The run directory's ``README.md``: what the model is, from its metadata."""
    from .card import model_card

    write_text_atomic(run_dir.card, model_card(metadata, str(run_dir)))


def training_provenance(cfg: DictConfig, datamodule: AtomsDataModule) -> dict:
    """What a model file records of its training data, and of DeNS where it ran beside energies and
    forces (how the model was trained travels with it)."""
    provenance = dict(datamodule.provenance)
    if dens_auxiliary(cfg):
        provenance["dens"] = OmegaConf.to_container(cfg.task.dens, resolve=True)
    replay = cfg.get("finetune", {}).get("replay")
    if replay is not None and replay.weight > 0:
        provenance["replay"] = OmegaConf.to_container(replay, resolve=True)
    return provenance


def selected_validation_loss(cfg: DictConfig, trainer) -> float | None:
    """The validation loss of the kept weights: the best one when checkpoints are chosen by the loss,
    the latest validation's for ``checkpoint.monitor=last``, else not recorded (None)."""
    if cfg.checkpoint.monitor == "loss":
        value = trainer.checkpoint_callback.best_model_score
    elif cfg.checkpoint.monitor == "last":
        value = trainer.callback_metrics.get("val/loss")
    else:
        return None
    return float(value) if value is not None else None


def save_pretrained(
    cfg: DictConfig, task, datamodule: AtomsDataModule, trainer, run_dir: RunDirectory
) -> None:
    """Write a pretraining run's model file and card: the objective, the pretraining data and the
    best validation loss (and a labelled objective's validation errors)."""
    path = run_dir.model
    best = selected_validation_loss(cfg, trainer)
    provenance = training_provenance(cfg, datamodule)
    elements = datamodule.splits["train"].elements
    if cfg.task.objective == "denoise":
        model = task.model.cpu()
        metadata = pretrain_metadata(
            model.backbone,
            provenance=provenance,
            elements=elements,
            noise=OmegaConf.to_container(cfg.task.noise, resolve=True)
            | {"force_encoding": model.force_encoder is not None},
            validation={"noise_loss": best},
            steps=trainer.global_step,
        )
        parts = {"backbone": model.backbone, "noise_head": model.noise_head}
        if model.force_encoder is not None:
            parts["force_encoder"] = model.force_encoder
        save_model(None, path, metadata, parts)  # no energy head: it was not trained
        write_card(run_dir, metadata)
        return
    potential = task.potential.cpu().eval()
    errors, _ = evaluate_structures(potential, datamodule.splits["val"], datamodule.eval_batch_size)
    metadata = model_metadata(
        potential,
        stage="pretrain",
        provenance=provenance,
        elements=elements,
        objective=cfg.task.objective,
        validation={"loss": best, **errors},
        steps=trainer.global_step,
    )
    encoder = task.force_encoder
    save_model(potential, path, metadata, parts={"force_encoder": encoder.cpu()} if encoder else None)
    write_card(run_dir, metadata)


def save_finetuned(
    cfg: DictConfig,
    task,
    datamodule: AtomsDataModule,
    run_dir: RunDirectory,
    origin: dict | None,
    test_metrics,
) -> None:
    """Write a finetune run's model file (where it started from, its test errors), card and test metrics."""
    potential = task.potential.cpu().eval()
    provenance = training_provenance(cfg, datamodule)
    if origin is not None:
        provenance["pretrained_from"] = origin
    metadata = model_metadata(
        potential,
        stage="finetune",
        provenance=provenance,
        elements=sorted(datamodule.references),
        test_metrics=test_metrics,
    )
    save_model(potential, run_dir.model, metadata)
    write_card(run_dir, metadata)
    if test_metrics is not None:
        write_json_atomic(run_dir.test_metrics, test_metrics)
