"""`make bench`: every benchmark, written to BENCHMARKS.md (run in the bench environment, .venv-bench,
which also holds schnetpack and nequip).

    python -m bench.run [--skip peers stages ...]

This script measures (median of repeats, with the spread):
- neighbour lists for a batch of 32 aspirin-sized molecules (21 atoms) per backend;
- training throughput of each registered backbone at its default size: structures per second for
  forward + autograd forces + backward + optimizer step, batch 32 of 21-atom molecules, float32;
- denoising pretraining throughput of each backbone: corruption + neighbour list at the noisy positions
  + noise head + backward + optimizer step, same batch;
- the sampler: normal-mode conformations per second (Hessian included) on 20 bundled molecules;

then runs the other scripts of bench/ as ``python -m bench.NAME``, each of which writes its own
``<!-- name -->`` section: :data:`SCRIPTS`. Sections nobody rewrote are kept; ``<!-- summary -->``
(written by hand: how to rerun, the targets, notes on the tables) stays first.
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import time

import numpy as np
import torch

from bench.common import BENCHMARKS, ROOT, timed, training_step
from dens_lightning.allocator import keep_freed_memory
from dens_lightning.data.graph import Graph, collate
from dens_lightning.data.neighbors import has_torch_cluster, neighbor_list
from dens_lightning.data.sampling import Sampler, read_molecules
from dens_lightning.models import BACKBONES
from dens_lightning.models.potential import Potential
from dens_lightning.tasks.pretrain import DenoisingPretraining

ASPIRIN = np.array([6] * 9 + [8] * 4 + [1] * 8)


def aspirin_like_batch(size: int, seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(size):
        pos = rng.normal(0, 1.6, (21, 3))
        n = 21
        graphs.append(
            Graph(
                z=torch.as_tensor(ASPIRIN),
                pos=torch.as_tensor(pos, dtype=torch.float32),
                batch=torch.zeros(n, dtype=torch.long),
                ptr=torch.tensor([0, n]),
                cell=torch.zeros(1, 3, 3),
                pbc=torch.zeros(1, 3, dtype=torch.bool),
                energy=torch.zeros(1),
                forces=torch.as_tensor(rng.normal(0, 1, (n, 3)), dtype=torch.float32),
            )
        )
    return collate(graphs)


def bench_neighbors(batch: Graph) -> list[str]:
    rows = ["| backend | ms per batch of 32 (median) | spread (ms) |", "|---|---|---|"]
    backends = ["cdist", "vesin"] + (["torch_cluster"] if has_torch_cluster() else [])
    for backend in backends:
        med, spread = timed(
            lambda b=backend: neighbor_list(batch.pos, batch.ptr, 5.0, batch.cell, batch.pbc, b), 50
        )
        rows.append(f"| {backend} | {med * 1e3:.2f} | {spread * 1e3:.2f} |")
    return rows


def time_training_step(name: str, batch: Graph) -> tuple[int, float, float]:
    """Parameters, median and spread (s) of one training step of backbone ``name``."""
    torch.manual_seed(0)
    potential = Potential.build(name, {}).train()
    optimizer = torch.optim.AdamW(potential.parameters(), lr=1e-4)
    graph = potential.prepare(batch)

    def predict():
        out = potential(graph, create_graph=True)
        return out["energy"], out["forces"]

    med, spread = timed(training_step(predict, optimizer, graph.energy, graph.forces), 15)
    return sum(p.numel() for p in potential.parameters()), med, spread


def default_size(name: str) -> str:
    """The backbone's default hyperparameters, cutoff and max_z left out."""
    config = BACKBONES[name].Config()
    return ", ".join(f"{k} {v}" for k, v in vars(config).items() if k not in ("cutoff", "max_z"))


def bench_training(batch: Graph) -> list[str]:
    rows = [
        "| backbone | default size | parameters | structures/s (median) | ms per step | spread (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(BACKBONES):
        params, med, spread = time_training_step(name, batch)
        rows.append(
            f"| {name} | {default_size(name)} | {params:,} | {batch.num_graphs / med:.0f} | {med * 1e3:.1f} "
            f"| {spread * 1e3:.1f} |"
        )
    return rows


def time_pretrain_step(name: str, batch: Graph) -> tuple[float, float]:
    """Median and spread (s) of one denoising pretraining step of backbone ``name``."""
    torch.manual_seed(0)
    noise = {"sigma": 0.1, "sigma_max": None, "atom_fraction": 1.0}
    task = DenoisingPretraining(name, {}, {"lr": 1e-4, "noise": noise}).train()
    optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4)

    def step():
        loss = task.losses(batch)["noise"].value
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return timed(step, 15)


def bench_pretraining(batch: Graph) -> list[str]:
    rows = ["| backbone | structures/s (median) | ms per step | spread (ms) |", "|---|---|---|---|"]
    for name in sorted(BACKBONES):
        med, spread = time_pretrain_step(name, batch)
        rows.append(f"| {name} | {batch.num_graphs / med:.0f} | {med * 1e3:.1f} | {spread * 1e3:.1f} |")
    return rows


def bench_sampler() -> list[str]:
    rows = ["| method | conformations/s | rejected (bonds) |", "|---|---|---|"]
    molecules = read_molecules(smiles_file="bundled")[:20]
    for method in ("normal-mode", "md", "perturb"):
        sampler = Sampler(method=method, temperature=500.0, conformers=2, samples=50, seed=0)
        start = time.perf_counter()
        count = sum(1 for _ in sampler.sample(molecules))
        elapsed = time.perf_counter() - start
        rows.append(f"| {method} | {count / elapsed:.0f} | {sampler.report.rejected_bonds} of {count} kept |")
    return rows


KEPT_SECTION = re.compile(r"<!-- ([\w-]+) -->.*?<!-- /\1 -->\n?", re.S)


def kept_sections(text: str) -> list[str]:
    """The sections other scripts write between ``<!-- name -->`` and ``<!-- /name -->``, which a
    ``make bench`` run keeps (bench.multi_device, bench.export)."""
    sections: dict[str, str] = {}  # by name: the first copy only, as common.with_section keeps
    for match in KEPT_SECTION.finditer(text):
        sections.setdefault(match.group(1), match.group(0).rstrip("\n"))
    return sorted(sections.values(), key=lambda section: not section.startswith("<!-- summary -->"))


# module (run as python -m), its arguments: each writes its own section of BENCHMARKS.md
SCRIPTS = {
    "peers": ["bench.peers", "--repeats", "3"],
    "calculator": ["bench.calculator", "--repeats", "8"],
    "nequip-in-process": ["bench.nequip_in_process", "--rounds", "12"],
    "stages": ["bench.stages", "--repeats", "2"],
    "loop-profile": ["bench.loop_profile"],
    "scaling": ["bench.scaling"],
    "low-memory": ["bench.low_memory"],
    "huge-pages": ["bench.huge_pages", "--repeats", "3"],
    "dataset-memory": ["bench.dataset_memory"],
    "labelling": ["bench.labelling"],
    "export": ["bench.export"],
    "multi-device": ["bench.multi_device", "--steps", "20", "120"],
    "flops": ["bench.flops"],
}
ON_DEVICE = ("peers", "stages", "flops")  # the scripts that take --device (GPU tables: their -gpu sections)


def main() -> None:
    parser = argparse.ArgumentParser(description="make bench: every benchmark, into BENCHMARKS.md")
    parser.add_argument("--skip", nargs="*", default=[], choices=["own", *SCRIPTS], help="parts not to run")
    parser.add_argument("--device", default="cpu", help=f"cuda[:N]: only {', '.join(ON_DEVICE)}, on that GPU")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():  # fail before any trial, in one line
        parser.error(
            f"--device {args.device}: torch {torch.__version__} ({sys.executable}) sees no CUDA device; "
            "rebuild the bench environment with a CUDA build (rm -rf .venv-bench, then "
            'make bench-gpu TORCH="torch==2.13.0 --index-url <your CUDA wheel index>")'
        )
    if "own" not in args.skip and not gpu:
        own_sections()
    for name, command in SCRIPTS.items():
        if name in args.skip or (gpu and name not in ON_DEVICE):
            continue
        command = [*command, "--device", args.device] if gpu else command
        print(f"--- {name}: python -m {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True)


def own_sections() -> None:
    keep_freed_memory()
    torch.set_num_threads(2)
    batch = aspirin_like_batch(32)
    threads = torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}"
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`.venv-bench/bin/python -m bench.run`, every script of `bench/`); each",
        "section says its own command. CPU sections: 2 threads, float32, on the machine named below.",
        f"Machine: {machine}; Python {platform.python_version()}; float32; CPU.",
        "",
        "## Neighbour lists: 32 aspirin-sized molecules (21 atoms), cutoff 5 Å",
        "",
        *bench_neighbors(batch),
        "",
        "## Training throughput: forward + autograd forces + backward + AdamW step",
        "",
        "Batch of 32 aspirin-sized molecules (21 atoms), each backbone at its default size, model step only",
        "(neighbour list built beforehand).",
        "",
        *bench_training(batch),
        "",
        "## Denoising pretraining throughput: corrupt + neighbours at noisy positions + noise head + step",
        "",
        "Same batch, sigma 0.1 Å, every atom corrupted; SchNet's gradient head needs a double backward.",
        "",
        *bench_pretraining(batch),
        "",
        "## Sampler: 20 bundled molecules x 2 ETKDG conformers x 50 samples at 500 K (MMFF94)",
        "",
        "Wall time includes conformer embedding, MMFF94 relaxation and, for normal-mode, the Hessian.",
        "",
        *bench_sampler(),
        "",
    ]
    kept = kept_sections(BENCHMARKS.read_text() if BENCHMARKS.exists() else "")
    summary = [section for section in kept if section.startswith("<!-- summary -->")]
    header, body = lines[:6], lines[6:]  # the title and the machine, then this script's sections
    first = [part for section in summary for part in (section, "")]
    others = [part for section in kept if section not in summary for part in (section, "")]
    text = [*header, *first, *body, *others]
    BENCHMARKS.write_text("\n".join(text))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
