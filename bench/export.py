"""Inference speed of exported models: energy + forces + virial of aspirin-sized molecules, eager
against the ``torch.export`` program (pt2) and the AOTInductor package (aoti).

    python -m bench.export

Each registered backbone at its default size, float32, neighbour list built beforehand; batches of 1
and 32 molecules of 21 atoms. Also records the export time. The result replaces the export section of
BENCHMARKS.md, which ``make bench`` keeps.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from bench.common import timed, write_section
from bench.run import aspirin_like_batch
from dens_lightning.export import ExportedModel, export_model, graph_inputs
from dens_lightning.models import BACKBONES
from dens_lightning.models.potential import Potential


def bench_backbone(name: str, folder: Path) -> list[str]:
    torch.manual_seed(0)
    potential = Potential.build(name, {}).eval()
    batches = {size: potential.prepare(aspirin_like_batch(size)) for size in (1, 32)}
    rows = []
    runners = {"eager": lambda g: potential.evaluate(g, create_graph=False, compute_virial=True)}
    export_seconds = {}
    for format in ("pt2", "aoti"):
        start = time.perf_counter()
        path = export_model(potential, folder / f"{name}-{format}.pt2", format)
        export_seconds[format] = time.perf_counter() - start
        exported = ExportedModel(path)
        runners[format] = lambda g, fn=exported: fn(*graph_inputs(g))
    for format, run in runners.items():
        cells = []
        for graph in batches.values():
            median, _ = timed(lambda r=run, g=graph: r(g), repeats=30)
            cells.append(f"{median * 1e3:.2f}")
        made = f"{export_seconds[format]:.0f}" if format in export_seconds else "–"
        rows.append(f"| {name} | {format} | {cells[0]} | {cells[1]} | {made} |")
    return rows


def main() -> None:
    torch.set_num_threads(2)
    rows = [
        "| backbone | runs as | ms, 1 molecule | ms, 32 molecules | export time (s) |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for name in sorted(BACKBONES):
            rows += bench_backbone(name, Path(folder))
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    write_section(
        "export",
        [
            "## Inference: eager against exported (energy + forces + virial)",
            "",
            f"`python -m bench.export`; {machine}, torch {torch.__version__}, float32, CPU. Median of",
            "30 calls, neighbour list built beforehand; molecules of 21 atoms; each backbone at its",
            "default size.",
            "",
            *rows,
        ],
    )


if __name__ == "__main__":
    main()
