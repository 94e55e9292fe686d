"""MD stability of each code's model at the end of its ``bench.accuracy`` run:

    python -m bench.stability [--data rmd17_ethanol 3bpa] [--codes ...] [--budget 1200] [--jobs 2]

From 5 structures evenly spaced through the test file, 10 ps of Langevin dynamics at 500 K (0.5 fs
steps; criteria in :mod:`bench.md_stability`) with the snapshot each code wrote at the end of its
budget, in the code's own environment and ASE calculator. The runs go in ``--jobs`` processes side
by side, one thread each (a small molecule's force call gains nothing from a second thread). Each
code's result is kept in its own file and skipped on a rerun; section ``stability-<data>`` of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.accuracy import CODES, DATA, MACE_PY, SHARED, WORK, missing, write_atomically
from bench.common import machine, run_trial, write_section
from bench.md_stability import BOND_CHANGE, FRICTION_PER_FS, RUNAWAY, TIMESTEP_FS
from bench.timed_training import snapshot_name

PICOSECONDS, TEMPERATURE, FRAMES = 10.0, 500.0, 5


def snapshot(code: str, data: str, budget: float) -> Path:
    """The model file ``code`` wrote when its training time reached ``budget``."""
    run, name = WORK / data / code, snapshot_name(budget)
    if code == "mace":
        return run / f"{name}.model"
    suffix = ".pt" if code.startswith("schnetpack") else ".ckpt"
    return run / "timed" / f"{name}{suffix}"


def result_path(code: str, data: str, budget: float) -> Path:
    return WORK / data / "stability" / f"{code}-{snapshot_name(budget)}.json"


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def trial(code: str, data: str, budget: float, jobs: int = 2) -> dict:
    """Each of the runs in its own process, ``jobs`` at a time; the runs in structure order."""
    model = snapshot(code, data, budget)
    if not model.exists():
        raise FileNotFoundError(f"{model}: no snapshot of {code} at {budget:g} s; run bench.accuracy first")
    arguments = [code, str(model), str(SHARED / DATA[data].test), f"{PICOSECONDS:g}", f"{TEMPERATURE:g}"]
    python = MACE_PY if code == "mace" else None

    def one(index: int) -> dict:
        line = run_trial(
            "bench.md_stability", *arguments, str(FRAMES), str(index), env=ONE_THREAD, python=python
        )
        return json.loads(line)[0]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        runs = list(pool.map(one, range(FRAMES)))
    return {"code": code, "data": data, "budget": budget, "runs": runs}


def row(result: dict) -> str:
    runs = result["runs"]
    times = " · ".join(f"{r['stable_ps']:g}" + (f" ({r['failure']})" if r["failure"] else "") for r in runs)
    intact = sum(r["failure"] is None for r in runs)
    mean = sum(r["stable_ps"] for r in runs) / len(runs)
    return f"| {result['code']} | {intact} / {len(runs)} | {mean:.2f} | {times} |"


def section(results: list[dict], data: str, budget: float) -> list[str]:
    return [
        f"## MD stability: {data}",
        "",
        f"`.venv-bench/bin/python -m bench.stability --data {data} --budget {budget:g}`; {machine()}; "
        "the runs side by side, one thread each.",
        f"Each code's model after {budget / 60:g} minutes of training (the time-to-accuracy run above);",
        f"{FRAMES} test structures, {PICOSECONDS:g} ps of Langevin dynamics at {TEMPERATURE:g} K, "
        f"{TIMESTEP_FS:g} fs steps, friction {FRICTION_PER_FS:g} fs⁻¹ (ASE). A run fails when a bond of its "
        f"starting structure changes by more than {BOND_CHANGE:g} Å, two atoms come within 0.5 Å, or the "
        f"temperature exceeds {RUNAWAY:g} times the target. Cells: runs intact at the end, mean time "
        "intact (ps; a failed run counts its time), and each run's time (ps) with its failure.",
        "",
        "| code | intact | mean (ps) | each run (ps) |",
        "|---|---|---|---|",
        *(row(result) for result in results),
        *missing(results),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1200.0, help="training seconds of the snapshot")
    parser.add_argument("--data", nargs="+", choices=list(DATA), default=list(DATA))
    parser.add_argument("--codes", nargs="+", choices=CODES, default=CODES)
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one thread each")
    args = parser.parse_args()
    for data in args.data:
        for code in args.codes:
            path = result_path(code, data, args.budget)
            if path.exists() or not snapshot(code, data, args.budget).exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, json.dumps(trial(code, data, args.budget, args.jobs), indent=1) + "\n")
            print(path.read_text(), flush=True)
        paths = [result_path(code, data, args.budget) for code in CODES]
        results = [json.loads(path.read_text()) for path in paths if path.exists()]
        if results:
            write_section(f"stability-{data}", section(results, data, args.budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
