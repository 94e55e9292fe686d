"""How fast does the package make labelled pretraining sets? Conformations per second of sampling
and GFN2-xTB labelling (tblite) with 1 and 2 worker processes.

    python -m bench.labelling [--molecules 60] [--samples 50] [--workers 1 2]

The first ``--molecules`` bundled molecules of 10 to 25 atoms (hydrogens included), one ETKDG
conformer each, ``--samples`` normal-mode conformations at 500 K per conformer, labelled as
``python -m dens_lightning sample --label xtb --workers N`` labels them (shards of 8 molecules,
each saved as it finishes). Wall time includes conformer embedding, the MMFF94 Hessian, the xTB
single points and starting the worker processes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import machine, write_section
from dens_lightning.data.sampling import Sampler, read_molecules
from dens_lightning.data.shards import sample_sharded


def molecules_of_size(count: int, low: int = 10, high: int = 25) -> list:
    chosen = [m for m in read_molecules(smiles_file="bundled") if low <= m.mol.GetNumAtoms() <= high]
    return chosen[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=60)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    molecules = molecules_of_size(args.molecules)
    atoms = sum(m.mol.GetNumAtoms() for m in molecules) / len(molecules)
    rows = []
    for workers in args.workers:
        sampler = Sampler(method="normal-mode", temperature=500.0, samples=args.samples, labeller="xtb")
        with tempfile.TemporaryDirectory() as work:
            start = time.perf_counter()
            result = sample_sharded(molecules, sampler, Path(work) / "shards", workers=workers)
            elapsed = time.perf_counter() - start
        count = len(result.samples)
        rows.append(
            f"| {workers} | {count} | {elapsed:.1f} | {count / elapsed:.1f} | {result.report.unlabelled} |"
        )
        print(rows[-1], flush=True)
    lines = [
        "## Labelling: sampling and GFN2-xTB single points",
        "",
        f"`python -m bench.labelling --molecules {args.molecules} --samples {args.samples}`; {machine()}.",
        f"{len(molecules)} bundled molecules of 10–25 atoms (mean {atoms:.1f}), one conformer each, "
        f"{args.samples} normal-mode",
        "samples at 500 K per conformer, labelled by tblite's GFN2-xTB in worker processes of one thread",
        "each; wall time from the SMILES to the labelled conformations in memory.",
        "",
        "| workers | conformations | wall time (s) | conformations/s | dropped (SCF not converged) |",
        "|---|---|---|---|---|",
        *rows,
    ]
    write_section("labelling", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
