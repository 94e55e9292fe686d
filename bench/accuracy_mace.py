"""MACE 0.3.16 in ``bench.accuracy``, run in its own environment (``.venv-mace``: MACE pins e3nn
0.4.4):

    .venv-mace/bin/python -m bench.accuracy_mace --trial TRAIN VAL TEST ISOLATED MARKS OUT

MACE's own training (``mace.cli.run_train.run``) at the settings of its README example, which is a
3BPA run: ``MACE``, hidden irreps ``128x0e + 128x1o``, cutoff 5 Å, batch 10, EMA 0.99, AMSGrad, its
defaults otherwise (lr 0.01, force weight 100, ReduceLROnPlateau 0.8 / 50 epochs), float32 (the
README: about twice as fast as float64), reference energies of isolated atoms (``--E0s``).
Departures: CPU; no second stage (it starts at an epoch count, which a time budget does not fix).

MACE has no callbacks: a snapshot is taken by wrapping ``mace.tools.train.take_step`` (called once per
batch), with the EMA weights in place; ``evaluate`` (validation) is wrapped to pause the clock. The
last mark ends training by an exception. Snapshots are tested with ``mace_eval_configs`` (batches of
64). Prints one JSON line: the snapshot points with test errors.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import subprocess
import sys
from pathlib import Path

from bench.timed_training import TrainingClock, prediction_errors, snapshot_name


class BudgetSpent(Exception):
    """Raised from the training step after the last mark."""


def e0s(isolated: str, train: str) -> str:
    """``--E0s``: the energy (eV) of each isolated atom in the file, by atomic number, for the elements
    of the training file (MACE's element table is the training data's)."""
    from ase.io import read

    present = {int(z) for atoms in read(train, ":") for z in atoms.numbers}
    energies = {int(a.numbers[0]): float(a.get_potential_energy()) for a in read(isolated, ":")}
    energies = {z: energy for z, energy in energies.items() if z in present}
    return "{" + ", ".join(f"{z}: {energy!r}" for z, energy in sorted(energies.items())) + "}"


def arguments(train: str, val: str, isolated: str, out: Path) -> list[str]:
    return [
        "--name=mace",
        "--seed=0",
        f"--log_dir={out / 'logs'}",
        f"--model_dir={out}",
        f"--checkpoints_dir={out / 'checkpoints'}",
        f"--results_dir={out / 'results'}",
        f"--train_file={train}",
        f"--valid_file={val}",
        "--energy_key=energy",
        "--forces_key=forces",
        f"--E0s={e0s(isolated, train)}",
        "--model=MACE",
        "--hidden_irreps=128x0e + 128x1o",
        "--r_max=5.0",
        "--batch_size=10",
        "--valid_batch_size=10",
        "--max_num_epochs=1000000",
        "--ema",
        "--ema_decay=0.99",
        "--amsgrad",
        "--default_dtype=float32",
        "--device=cpu",
    ]


def trial(train: str, val: str, test: str, isolated: str, marks: list[float], out: Path) -> list[dict]:
    import torch
    from ase.io import read
    from mace import tools
    from mace.cli.run_train import run

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    training = importlib.import_module("mace.tools.train")  # `mace.tools.train` the attribute is the function
    take_step, evaluate = training.take_step, training.evaluate
    clock, steps = TrainingClock(marks), [0]

    def timed_step(**kwargs):
        if steps[0] == 0:
            clock.start()

        def write(mark: float) -> None:
            ema = kwargs.get("ema")
            with ema.average_parameters() if ema is not None else contextlib.nullcontext():
                snapshot = copy.deepcopy(kwargs["model"]).cpu()
            torch.save(snapshot, out / f"{snapshot_name(mark)}.model")

        clock.passed(steps[0], write)
        if clock.done:
            raise BudgetSpent
        steps[0] += 1
        return take_step(**kwargs)

    def timed_evaluate(*args, **kwargs):
        clock.pause()
        try:
            return evaluate(*args, **kwargs)
        finally:
            clock.resume()

    training.take_step, training.evaluate = timed_step, timed_evaluate
    with contextlib.suppress(BudgetSpent):  # the last mark was passed
        run(tools.build_default_arg_parser().parse_args(arguments(train, val, isolated, out)))
    frames, points = read(test, ":"), []
    for point in clock.written:
        points.append(
            {**point, **snapshot_errors(out / f"{snapshot_name(point['seconds'])}.model", test, frames)}
        )
    return points


def snapshot_errors(model: Path, test: str, frames: list) -> dict:
    """Test errors of a saved MACE model, predicted in batches by ``mace_eval_configs`` (MACE's own
    evaluation; one calculator call per structure is several times slower)."""
    from ase.io import read

    output = model.with_suffix(".test.xyz")
    command = [
        str(Path(sys.executable).parent / "mace_eval_configs"),
        f"--configs={test}",
        f"--model={model}",
    ]
    command += [f"--output={output}", "--device=cpu", "--default_dtype=float32", "--batch_size=64"]
    subprocess.run(command, check=True, capture_output=True)
    predicted = read(output, ":")
    energies = [atoms.info["MACE_energy"] for atoms in predicted]
    return prediction_errors(frames, energies, [atoms.arrays["MACE_forces"] for atoms in predicted])


def mace_calculator(model: Path):
    """MACE's ASE calculator of a saved model (float32, as trained)."""
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(model), device="cpu", default_dtype="float32")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trial", nargs=6, metavar=("TRAIN", "VAL", "TEST", "ISOLATED", "MARKS", "OUT"), required=True
    )
    train, val, test, isolated, marks, out = parser.parse_args().trial
    points = trial(train, val, test, isolated, [float(m) for m in marks.split(",")], Path(out))
    print(json.dumps(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
