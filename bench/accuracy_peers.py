"""nequip 0.19 and schnetpack 2.1.1 in ``bench.accuracy``: each trained at its own documented
settings for small molecules on the prepared train/validation files, with a snapshot at each
training-time mark, then each snapshot tested through the code's own ASE calculator.

- nequip: ``configs/tutorial.yaml`` of the nequip repository (NequIPGNNModel, 4 layers, l_max 1,
  32 features, 8 Bessels, radial MLP 2 × 64, per-type scales and shifts from the data, EMA 0.999,
  per-atom energy and force losses 1 : 1, Adam lr 0.01, ReduceLROnPlateau 0.6 / 5 epochs, batch 5),
  run by ``nequip-train``; departures: CPU, no ``torch.compile``, no ZBL pair term (a prior for
  close contacts, absent from the other codes), no early stopping or logger.
- schnetpack: ``configs/experiment/rmd17.yaml`` of schnetpack 2.1.1 (PaiNN 128 × 3, or SchNet
  128 × 6 from its SchNet representation config; 20 Gaussians, cosine cutoff 5 Å, mean energy
  removed, MSE losses 0.01 : 0.99, AdamW lr 1e-3, its ReduceLROnPlateau 0.5 / 75 epochs, EMA 0.995,
  batch 10), built in Python as ``spktrain`` builds it; departures: no early stopping or logger;
  torch's ReduceLROnPlateau in place of schnetpack's wrapper (which passes an argument torch 2.13
  removed; with its default smoothing 0 it is the same).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.peers import saved_schnetpack_calculator, schnetpack_outputs
from bench.timed_training import WRITTEN, calculator_errors, snapshot_name, wall_clock_callback

CUTOFF = 5.0


@dataclass
class Files:
    """A data set split into files every code reads (eV, Å), and its elements."""

    train: Path
    val: Path
    test: Path
    symbols: list[str]
    isolated: Path | None = None  # isolated-atom energies (MACE's E0s)


def read(path: Path) -> list:
    from ase.io import read as ase_read

    return ase_read(path, index=":")


# ---------------------------------------------------------------- nequip


def nequip_config(files: Files, marks: list[float], run_dir: Path) -> dict:
    stats = "training_data_stats"
    metrics = {
        "_target_": "nequip.train.EnergyForceMetrics",
        "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0},
    }
    return {
        "run": ["train"],
        "cutoff_radius": CUTOFF,
        "chemical_symbols": files.symbols,
        "model_type_names": "${chemical_symbols}",
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": 0,
            "train_file_path": str(files.train),
            "val_file_path": str(files.val),
            "transforms": [
                {
                    "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                    "model_type_names": "${model_type_names}",
                    "chemical_species_to_atom_type_map": {symbol: symbol for symbol in files.symbols},
                },
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 5, "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 10},
            "stats_manager": {
                "_target_": "nequip.data.CommonDataStatisticsManager",
                "dataloader_kwargs": {"batch_size": 10},
                "type_names": "${model_type_names}",
            },
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "max_epochs": 1_000_000,
            "logger": False,
            "enable_progress_bar": False,
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(run_dir),
                    "save_last": True,
                },
                {
                    "_target_": "bench.timed_training.lightning_wall_clock",
                    "marks": marks,
                    "directory": str(run_dir / "timed"),
                },
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": 0.999,
            "loss": {
                "_target_": "nequip.train.EnergyForceLoss",
                "per_atom_energy": True,
                "coeffs": {"total_energy": 1.0, "forces": 1.0},
            },
            "val_metrics": metrics,
            "train_metrics": metrics,
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
            "lr_scheduler": {
                "scheduler": {
                    "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                    "factor": 0.6,
                    "patience": 5,
                    "threshold": 0.2,
                    "min_lr": 1e-6,
                },
                "monitor": "val0_epoch/weighted_sum",
                "interval": "epoch",
                "frequency": 1,
            },
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": 0,
                "model_dtype": "float32",
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "num_bessels": 8,
                "bessel_trainable": False,
                "polynomial_cutoff_p": 6,
                "num_layers": 4,
                "l_max": 1,
                "parity": True,
                "num_features": 32,
                "radial_mlp_depth": 2,
                "radial_mlp_width": 64,
                "avg_num_neighbors": f"${{{stats}:num_neighbors_mean}}",
                "per_type_energy_scales": f"${{{stats}:per_type_forces_rms}}",
                "per_type_energy_shifts": f"${{{stats}:per_atom_energy_mean}}",
                "per_type_energy_scales_trainable": False,
                "per_type_energy_shifts_trainable": False,
            },
        },
        "global_options": {"allow_tf32": False},
    }


def nequip_trial(files: Files, marks: list[float], run_dir: Path) -> list[dict]:
    """Train with ``nequip-train`` (the snapshot callback joins through the config), then test."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(nequip_config(files, marks, run_dir), sort_keys=False)
    )
    command = [str(Path(sys.executable).parent / "nequip-train"), "-cp", str(run_dir), "-cn", "config.yaml"]
    command.append(f"hydra.run.dir={run_dir / 'hydra'}")
    root = str(Path(__file__).resolve().parent.parent)  # the config's callback is bench's
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), root]))}
    done = subprocess.run(command, capture_output=True, text=True, cwd=run_dir, env=env)
    written = run_dir / "timed" / WRITTEN
    if not written.exists():
        raise RuntimeError(f"nequip-train wrote no snapshot:\n{done.stderr[-3000:]}")
    frames, points = read(files.test), []
    for point in json.loads(written.read_text()):
        snapshot = run_dir / "timed" / f"{snapshot_name(point['seconds'])}.ckpt"
        points.append({**point, **calculator_errors(nequip_calculator(snapshot), frames)})
    return points


def nequip_calculator(snapshot: Path):
    """nequip's ASE calculator of a training checkpoint (its EMA weights)."""
    from nequip.integrations.ase import NequIPCalculator

    return NequIPCalculator._from_saved_model(
        str(snapshot), device="cpu", chemical_species_to_atom_type_map=True
    )


# ---------------------------------------------------------------- schnetpack


def schnetpack_database(files: Files, run_dir: Path) -> tuple[Path, Path, int, int]:
    """The train and validation files as one ASE database (schnetpack's format), its split file and
    the numbers of training and validation structures."""
    import numpy as np
    from schnetpack.data import ASEAtomsData

    train, val = read(files.train), read(files.val)
    frames = train + val
    database, split = run_dir / "data.db", run_dir / "split.npz"
    database.unlink(missing_ok=True)
    data = ASEAtomsData.create(
        str(database), distance_unit="Ang", property_unit_dict={"energy": "eV", "forces": "eV/Ang"}
    )
    data.add_systems(
        [{"energy": np.array([a.get_potential_energy()]), "forces": a.get_forces()} for a in frames], frames
    )
    n_train = len(train)
    np.savez(
        split, train_idx=np.arange(n_train), val_idx=np.arange(n_train, len(frames)), test_idx=np.array([])
    )
    return database, split, len(train), len(val)


def schnetpack_representation(name: str):
    """schnetpack's representation configs (``configs/model/representation/{painn,schnet}.yaml``;
    128 features, 20 Gaussians, cosine cutoff): PaiNN with 3 interactions, SchNet with 6."""
    import schnetpack as spk

    radial = {
        "radial_basis": spk.nn.GaussianRBF(n_rbf=20, cutoff=CUTOFF),
        "cutoff_fn": spk.nn.CosineCutoff(CUTOFF),
    }
    if name == "painn":
        return spk.representation.PaiNN(n_atom_basis=128, n_interactions=3, **radial)
    return spk.representation.SchNet(n_atom_basis=128, n_interactions=6, **radial)


def schnetpack_trial(
    files: Files, marks: list[float], run_dir: Path, representation: str = "painn"
) -> list[dict]:
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torch

    torch.manual_seed(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    database, split, n_train, n_val = schnetpack_database(files, run_dir)
    datamodule = spk.data.AtomsDataModule(
        str(database),
        batch_size=10,
        num_train=n_train,
        num_val=n_val,
        split_file=str(split),
        transforms=[
            trn.SubtractCenterOfMass(),
            trn.RemoveOffsets("energy", remove_mean=True, remove_atomrefs=False),
            trn.MatScipyNeighborList(cutoff=CUTOFF),
            trn.CastTo32(),
        ],
        num_workers=0,
        property_units={"energy": "eV", "forces": "eV/Ang"},
        distance_unit="Ang",
    )
    model = spk.model.NeuralNetworkPotential(
        representation=schnetpack_representation(representation),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=128, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True, add_atomrefs=False)],
    )
    outputs = schnetpack_outputs()
    task = spk.task.AtomisticTask(
        model=model,
        outputs=outputs,
        optimizer_cls=torch.optim.AdamW,
        optimizer_args={"lr": 1e-3, "weight_decay": 0.0},
        # schnetpack's own wrapper passes `verbose`, which torch 2.13's class no longer takes; the
        # wrapper with its default smoothing 0 is this class
        scheduler_cls=torch.optim.lr_scheduler.ReduceLROnPlateau,
        scheduler_args={"factor": 0.5, "patience": 75, "cooldown": 10, "min_lr": 0.0},
        scheduler_monitor="val_loss",
    )
    ema = spk.train.ExponentialMovingAverage(decay=0.995)

    def save(trainer, module, path: Path) -> None:  # the EMA weights, as schnetpack's best model holds
        with ema.ema.average_parameters():
            torch.save(module.model, path.with_suffix(".pt"))

    clock = wall_clock_callback(pl.Callback, marks, run_dir / "timed", save)
    trainer = pl.Trainer(
        max_epochs=1_000_000,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(run_dir),
        callbacks=[ema, pl.callbacks.ModelCheckpoint(dirpath=run_dir, save_last=True), clock],
    )
    trainer.fit(task, datamodule=datamodule)
    frames, points = read(files.test), []
    for point in clock.written:
        snapshot = run_dir / "timed" / f"{snapshot_name(point['seconds'])}.pt"
        points.append({**point, **calculator_errors(saved_schnetpack_calculator(snapshot), frames)})
    return points
