"""Side by side with schnetpack 2.1 and nequip 0.19: training and inference throughput and peak memory
on the same aspirin data with the same hyperparameters, float32, 2 threads, batch 32.

    .venv-bench/bin/python -m bench.peers [--repeats 3]      (make bench builds .venv-bench)

Each trial is its own process (one code, one model), so its peak memory is its own; trials of a pair
alternate (ours, peer, peer, ours, ...) so that drift of the machine falls on both. A trial measures:
- model step: forward + autograd forces + backward + AdamW step on a prepared batch (neighbour list
  built beforehand), structures/s;
- whole loop: Lightning ``fit`` through each code's own data pipeline (reading, neighbour lists,
  collation, metrics, checkpoints), structures/s between batch starts after warm-up;
- calculator: ASE calculator calls/s (energy + forces) on one aspirin whose positions change each call;
- batched: predictions (energy + forces) of 32 ASE structures per call, structures/s;
- peak memory: peak RSS of the trial minus its peak once torch is imported (MB): the code's own
  imports, model, data, training and calculators.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from bench.common import (
    BATCH,
    ROOT,
    StepTimes,
    accelerator,
    alternating,
    aspirin_frames,
    calls_per_second,
    device_name,
    labels,
    loop_overrides,
    median_range,
    our_step,
    peak_rss_mb,
    run_trial,
    runner_loop,
    timed,
    training_step,
    write_section,
)

WORK = ROOT / "runs" / "bench" / "peers"
FRAMES = 1000  # 950 training, 50 validation (unused: validation is off in the loop)
CUTOFF = 5.0
TYPES = ["H", "C", "O"]
# model -> (our backbone and its hyperparameters, the peer that runs it)
PAIRS = {
    "SchNet": (
        ("schnet", {"hidden_channels": 128, "num_filters": 128, "num_interactions": 3, "num_rbf": 20}),
        "schnetpack",
    ),
    "PaiNN": (("painn", {"hidden_channels": 128, "num_interactions": 3, "num_rbf": 20}), "schnetpack"),
    "NequIP-sized": (("equiformer", {"lmax": 1, "num_channels": 32, "num_layers": 3}), "nequip"),
}
STEP_REPEATS, LOOP_STEPS = 10, 30


def prepare_data() -> str:
    """rMD17 aspirin (or a stand-in) as extxyz for us and as an ASE database for schnetpack."""
    WORK.mkdir(parents=True, exist_ok=True)
    frames, source = aspirin_frames(FRAMES)
    from ase.io import write

    write(WORK / "aspirin.extxyz", frames)
    db = WORK / "aspirin.db"
    db.unlink(missing_ok=True)
    (WORK / "split.npz").unlink(missing_ok=True)
    from schnetpack.data import ASEAtomsData

    data = ASEAtomsData.create(
        str(db), distance_unit="Ang", property_unit_dict={"energy": "eV", "forces": "eV/Ang"}
    )
    data.add_systems(
        [{"energy": np.array([a.get_potential_energy()]), "forces": a.get_forces()} for a in frames], frames
    )
    return source


def read_frames():
    from ase.io import read

    return read(WORK / "aspirin.extxyz", index=":")


# ---------------------------------------------------------------- ours


def ours(name: str, hparams: dict, measure_loop: bool, device: str) -> dict:
    import torch

    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.calculator import DensCalculator
    from dens_lightning.export import export_model
    from dens_lightning.models.potential import Potential

    keep_freed_memory()  # as every dens_lightning entry point does (dens_lightning.allocator)
    frames = read_frames()
    result = {}
    torch.manual_seed(0)
    potential = Potential.build(name, {"cutoff": CUTOFF, **hparams}).to(device)
    result["parameters"] = sum(p.numel() for p in potential.parameters())
    median, _ = timed(our_step(potential, frames[:BATCH], device), STEP_REPEATS, device=device)
    result["step"] = BATCH / median
    if measure_loop:
        overrides = [
            *loop_overrides(WORK / "aspirin.extxyz", FRAMES, name, LOOP_STEPS),
            f"model.cutoff={CUTOFF}",
            *(f"model.{k}={v}" for k, v in hparams.items()),
        ]
        timer = runner_loop("finetune", overrides, WORK / "ours-run", device=device)
        result["loop"] = timer.throughput()
        result["data_share"] = 100 * timer.data_fraction()
        calculator = DensCalculator(potential.eval(), device=device)
        result["calculator"] = calls_per_second(calculator, frames[0])
        median, _ = timed(lambda: calculator.batch(frames[:BATCH]), 10, warmup=2, device=device)
        result["batched"] = BATCH / median
        compiled = WORK / "ours-aoti.pt2"
        export_model(potential, compiled, format="aoti", device=device)
        result["calculator_aoti"] = calls_per_second(DensCalculator(compiled), frames[0])
    return result


# ---------------------------------------------------------------- schnetpack


def schnetpack_model(name: str, hparams: dict):
    import schnetpack as spk
    import schnetpack.transform as trn

    rbf = spk.nn.GaussianRBF(n_rbf=hparams["num_rbf"], cutoff=CUTOFF)
    envelope = spk.nn.CosineCutoff(CUTOFF)
    width = hparams["hidden_channels"]
    if name == "schnet":
        representation = spk.representation.SchNet(
            n_atom_basis=width,
            n_filters=hparams["num_filters"],
            n_interactions=hparams["num_interactions"],
            radial_basis=rbf,
            cutoff_fn=envelope,
        )
    else:
        representation = spk.representation.PaiNN(
            n_atom_basis=width,
            n_interactions=hparams["num_interactions"],
            radial_basis=rbf,
            cutoff_fn=envelope,
        )
    return spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=width, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
        postprocessors=[trn.CastTo64()],
    )


def schnetpack_outputs() -> list:
    """schnetpack's energy and force outputs as its rMD17 experiment weighs them: MSE, 0.01 : 0.99."""
    import schnetpack as spk
    import torch
    import torchmetrics

    return [
        spk.task.ModelOutput(
            name=key,
            loss_fn=torch.nn.MSELoss(),
            loss_weight=weight,
            metrics={"MAE": torchmetrics.MeanAbsoluteError()},
        )
        for key, weight in (("energy", 0.01), ("forces", 0.99))
    ]


def schnetpack_calculator(model, model_file: Path, device: str = "cpu"):
    """schnetpack's ``SpkCalculator`` (``MatScipyNeighborList``) on ``model``, saved to ``model_file``."""
    import torch

    torch.save(model.eval(), model_file)
    return saved_schnetpack_calculator(model_file, device)


def saved_schnetpack_calculator(model_file: Path, device: str = "cpu"):
    """schnetpack's ``SpkCalculator`` (``MatScipyNeighborList``) on a model file the benchmark wrote."""
    import schnetpack.transform as trn
    from schnetpack.interfaces import SpkCalculator

    # SpkCalculator unpickles a whole model, which torch >= 2.6 refuses by default; these are files
    # the benchmark itself wrote, so allow it (torch's documented escape hatch)
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return SpkCalculator(
        model_file=str(model_file),
        neighbor_list=trn.MatScipyNeighborList(cutoff=CUTOFF),
        energy_key="energy",
        force_key="forces",
        energy_unit="eV",
        position_unit="Ang",
        device=device,
    )


def schnetpack(name: str, hparams: dict, measure_loop: bool, device: str) -> dict:
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torch
    from schnetpack.data import AtomsDataModule
    from schnetpack.interfaces import AtomsConverter

    torch.manual_seed(0)
    model = schnetpack_model(name, hparams)
    result = {"parameters": sum(p.numel() for p in model.parameters())}
    datamodule = AtomsDataModule(
        str(WORK / "aspirin.db"),
        batch_size=BATCH,
        num_train=FRAMES - 50,
        num_val=50,
        split_file=str(WORK / "split.npz"),
        transforms=[trn.MatScipyNeighborList(cutoff=CUTOFF), trn.CastTo32()],
        num_workers=0,
        property_units={"energy": "eV", "forces": "eV/Ang"},
        distance_unit="Ang",
    )
    datamodule.prepare_data()
    datamodule.setup()
    model = model.to(device)
    batch = {k: v.to(device) for k, v in next(iter(datamodule.train_dataloader())).items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def predict():
        out = model(dict(batch))
        return out["energy"], out["forces"]

    step = training_step(predict, optimizer, batch["energy"], batch["forces"])
    median, _ = timed(step, STEP_REPEATS, device=device)
    result["step"] = BATCH / median
    if measure_loop:
        outputs = schnetpack_outputs()
        task = spk.task.AtomisticTask(
            model=model, outputs=outputs, optimizer_cls=torch.optim.AdamW, optimizer_args={"lr": 1e-4}
        )
        timer = StepTimes()
        run_dir = WORK / "schnetpack-run"
        shutil.rmtree(run_dir, ignore_errors=True)
        trainer = pl.Trainer(
            max_steps=timer.warmup + LOOP_STEPS + 1,
            limit_val_batches=0,
            logger=pl.loggers.CSVLogger(run_dir),
            callbacks=[
                pl.callbacks.ModelCheckpoint(dirpath=run_dir, save_last=True),
                timer.callback(pl.Callback),
            ],
            enable_progress_bar=False,
            enable_model_summary=False,
            inference_mode=False,
            accelerator=accelerator(device),
            devices=1,
        )
        trainer.fit(task, datamodule=datamodule)
        result["loop"] = timer.throughput()
        result["data_share"] = 100 * timer.data_fraction()
        calculator = schnetpack_calculator(model, run_dir / "model.pt", device)
        frames = read_frames()
        result["calculator"] = calls_per_second(calculator, frames[0])
        converter = AtomsConverter(
            neighbor_list=trn.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32, device=device
        )
        model = model.to(device)

        def predict_batch():
            out = model(converter(frames[:BATCH]))
            return out["energy"].detach(), out["forces"].detach()

        median, _ = timed(predict_batch, 10, warmup=2, device=device)
        result["batched"] = BATCH / median
    return result


# ---------------------------------------------------------------- nequip


def nequip_step(hparams: dict, device: str):
    """nequip's `NequIPGNNModel` at ``hparams`` and its :func:`training_step` on 32 aspirins
    (neighbour list built beforehand): (step, model)."""
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    model = NequIPGNNModel(
        seed=0,
        model_dtype="float32",
        type_names=TYPES,
        r_max=CUTOFF,
        num_layers=hparams["num_layers"],
        l_max=hparams["lmax"],
        num_features=hparams["num_channels"],
        avg_num_neighbors=16.0,
    )
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=TYPES)
    frames = read_frames()[:BATCH]
    batch = AtomicDataDict.batched_from_list(
        [compute_neighborlist_(mapper(from_ase(atoms)), CUTOFF) for atoms in frames]
    )
    model = model.to(device)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    energy, forces = (t.to(device) for t in labels(frames))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def predict():
        out = model(dict(batch))
        return out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1), out[AtomicDataDict.FORCE_KEY]

    return training_step(predict, optimizer, energy, forces), model


def nequip(name: str, hparams: dict, measure_loop: bool, device: str) -> dict:
    step, model = nequip_step(hparams, device)
    result = {"parameters": sum(p.numel() for p in model.parameters())}
    median, _ = timed(step, STEP_REPEATS, device=device)
    result["step"] = BATCH / median
    return result


CODES = {"ours": ours, "schnetpack": schnetpack, "nequip": nequip}


def trial(code: str, model: str, device: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(2)
    (name, hparams), peer = PAIRS[model]
    before = peak_rss_mb()
    result = CODES[code](name, hparams, measure_loop=peer == "schnetpack", device=device)
    result = {"code": code, "model": model, **result, "peak_mb": peak_rss_mb() - before}
    if device.startswith("cuda"):
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    return result


METRICS = [
    ("step", "model step (structures/s)"),
    ("loop", "whole loop (structures/s)"),
    ("data_share", "data loading (% of loop)"),
    ("calculator", "ASE calculator (calls/s)"),
    ("calculator_aoti", "ASE calculator, AOTI export (calls/s)"),
    ("batched", "batched predictions (structures/s)"),
    ("peak_mb", "peak memory (MB)"),
    ("gpu_peak_mb", "peak GPU memory allocated (MB)"),
]


# ours' metric -> the peer's metric it is compared with (the compiled calculator against theirs)
COMPARED_WITH = {"calculator_aoti": "calculator"}


def table(results: list[dict]) -> list[str]:
    """One row per model and metric: ours, the peer, and the per-repeat ratio ours / peer."""
    rows = ["| model | metric | ours | peer | ours / peer |", "|---|---|---|---|---|"]
    for model, (_, peer) in PAIRS.items():
        ours = [r for r in results if r["model"] == model and r["code"] == "ours"]
        theirs = [r for r in results if r["model"] == model and r["code"] == peer]
        if not ours or not theirs:
            continue
        rows.append(
            f"| **{model}** | parameters | {ours[0]['parameters']:,} "
            f"| {theirs[0]['parameters']:,} ({peer}) | |"
        )
        for key, label in METRICS:
            if key not in ours[0]:
                continue
            other = COMPARED_WITH.get(key, key)
            ratios = [a[key] / b[other] for a, b in zip(ours, theirs, strict=False) if other in b]
            mine = median_range([r[key] for r in ours])
            peer_values = median_range([r[other] for r in theirs if other in r])
            rows.append(f"| {model} | {label} | {mine} | {peer_values} | {median_range(ratios, 2)} |")
    return rows


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(
        f"{p} {version(p)}" for p in ("torch", "lightning", "e3nn", "schnetpack", "nequip", "matscipy")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (the GPU table: section peers-gpu)")
    parser.add_argument("--trial", nargs=3, metavar=("CODE", "MODEL", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial(*args.trial)))
        return 0
    source = prepare_data()
    results = []
    for repeat in range(args.repeats):
        for model in args.models:
            codes = ["ours", PAIRS[model][1]]
            for code in alternating(codes, repeat):
                # in WORK: schnetpack's data module leaves a splitting.lock in its working directory
                results.append(json.loads(run_trial("bench.peers", code, model, args.device, cwd=WORK)))
                print(json.dumps(results[-1]), flush=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    gpu = args.device.startswith("cuda")
    command = f"-m bench.peers --repeats {args.repeats}" + (f" --device {args.device}" if gpu else "")
    lines = [
        "## Side by side: schnetpack and nequip" + (", on a GPU" if gpu else ""),
        "",
        f"`.venv-bench/bin/python {command}`" + ("" if gpu else " (run by `make bench`)") + ";",
        f"{device_name(args.device)}; float32;",
        f"{versions()}.",
        f"Data: {FRAMES} structures of {source}; batch {BATCH}; cutoff {CUTOFF} Å; AdamW.",
        "Every cell: median over the repeats, (range); the ratio rows take ours / peer for each pair of",
        "interleaved trials, then the median and range of those ratios.",
        "",
        "- SchNet: 128 features, 3 interactions, 20 Gaussians, cosine cutoff (both codes).",
        "- PaiNN: 128 features, 3 interactions, 20 Gaussians, cosine cutoff (both codes).",
        "- NequIP-sized: nequip's `NequIPGNNModel` (l_max 1, 32 features, 3 layers, its defaults otherwise:",
        "  parity on, 8 Bessels, radial MLP 1×128) against our `equiformer` at l_max 1, 32 channels,",
        "  3 layers (its defaults otherwise: 4 heads, 32 Gaussians, radial MLP 64, feed-forward 64).",
        "- Whole loop: each code's Lightning `fit` on its own data pipeline. Ours is `run_finetune` as",
        "  `python -m dens_lightning finetune` runs it: extxyz read once into memory, cdist neighbour lists",
        "  in the collate, EMA, gradient clipping, CSV log, checkpoints. schnetpack: `AtomsDataModule` on an",
        "  ASE database with `MatScipyNeighborList` and `CastTo32` transforms, `AtomisticTask` with MAE",
        "  metrics, CSV log and checkpoints. Validation is off in both.",
        "- Calculator: ours `DensCalculator`; schnetpack `SpkCalculator` with `MatScipyNeighborList`;",
        "  'AOTI export': `DensCalculator` on the file `python -m dens_lightning export --format aoti`",
        "  writes (the model compiled ahead of time), its ratio taken against schnetpack's calculator.",
        "- Data loading: the share of the whole loop between one batch's end and the next one's start.",
        "- Peak memory: the trial's peak RSS minus its peak once torch is imported: the code's own imports,",
        "  model, data, training and calculators.",
        "",
        *table(results),
    ]
    write_section("peers-gpu" if gpu else "peers", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
