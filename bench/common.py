"""What the bench scripts share: the machine line, timing, aspirin data and writing BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dens_lightning.allocator import HUGE_PAGES

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
ASPIRIN_NPZ = ROOT.parent / "shared" / "data" / "rmd17_aspirin" / "rmd17_aspirin_1050.npz"
ASPIRIN_SMILES = "CC(=O)Oc1ccccc1C(=O)O"
KCAL_PER_MOL = 0.0433641043  # eV
BATCH = 32  # structures per training step in every comparison
LOOP_WARMUP = 5  # training steps left out of whole-loop rates


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} threads, torch {torch.__version__}, Python {platform.python_version()}"


def timed(
    fn: Callable[[], object], repeats: int, warmup: int = 3, device: str = "cpu"
) -> tuple[float, float]:
    """Median and spread (max - min) of ``repeats`` timed calls, in seconds; on a GPU each call is
    followed by a synchronisation, so it counts the kernels it queued."""
    import torch

    def call():
        fn()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples) - min(samples)


def accelerator(device: str) -> str:
    """Lightning's ``accelerator`` for a torch device name."""
    return "gpu" if str(device).startswith("cuda") else "cpu"


def device_name(device: str) -> str:
    """The device in words, for the headers: the CPU line of :func:`machine`, or the GPU's name."""
    import torch

    if str(device).startswith("cuda"):
        gpu = torch.cuda.get_device_name(torch.device(device))
        return f"{gpu} (CUDA {torch.version.cuda}); host {machine()}"
    return machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def aspirin_frames(count: int, seed: int = 0):
    """``count`` aspirin structures with energies and forces (eV, Å): rMD17 frames where
    ../shared/data holds them, else RDKit conformers of aspirin perturbed by 0.05 Å with random labels
    (throughput does not depend on the label values). Returns ASE ``Atoms`` and where they came from."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    if ASPIRIN_NPZ.exists():
        data = np.load(ASPIRIN_NPZ)
        chosen = rng.choice(len(data["E_shifted"]), size=count, replace=count > len(data["E_shifted"]))
        numbers = data["z"]
        positions = data["R"][chosen]
        energies = data["E_shifted"][chosen] * KCAL_PER_MOL
        forces = data["F"][chosen] * KCAL_PER_MOL
        source = f"rMD17 aspirin ({ASPIRIN_NPZ.name})"
    else:
        from dens_lightning.data.sampling import Sampler, read_molecules

        sampler = Sampler(method="perturb", conformers=1, samples=count, seed=seed, displacement=0.05)
        samples = list(sampler.sample(read_molecules(smiles=[ASPIRIN_SMILES])))
        numbers = samples[0].numbers
        positions = np.stack([s.positions for s in samples])
        energies = rng.normal(0, 0.1, len(samples))
        forces = rng.normal(0, 1, positions.shape)
        source = "RDKit aspirin conformers, perturbed (shared data absent)"
    frames = []
    for pos, energy, force in zip(positions, energies, forces, strict=True):
        atoms = Atoms(numbers=numbers, positions=pos)
        atoms.calc = SinglePointCalculator(atoms, energy=float(energy), forces=force)
        frames.append(atoms)
    return frames, source


def with_section(text: str, name: str, lines: list[str]) -> str:
    """``text`` with ``lines`` between ``<!-- name -->`` and ``<!-- /name -->``: in place of the first
    section of that name (later copies are dropped, so a name is never shown twice) or at the end."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = "\n".join([start, *lines, end])
    if start not in text:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    outside, rest = [], text  # the text around every copy of the section
    while start in rest:
        at = rest.index(start)
        stop = rest.find(end, at)
        if stop < 0:
            raise ValueError(f"BENCHMARKS.md: {start} has no closing {end}")
        outside.append(rest[:at])
        rest = rest[stop + len(end) :]
    outside.append(rest)
    tail = outside[1]
    for part in outside[2:]:  # where a later copy was: one blank line, or the file's end
        tail = tail.rstrip("\n") + ("\n\n" + part.lstrip("\n") if part.strip() else "\n")
    return outside[0] + section + tail


def write_section(name: str, lines: list[str]) -> None:
    """Put ``lines`` into BENCHMARKS.md as section ``name`` (:func:`with_section`) and print them."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    BENCHMARKS.write_text(with_section(text, name, lines))
    print("\n".join(lines))


class StepTimes:
    """Records when each training batch starts and ends; :meth:`callback` makes the Lightning callback
    (of ``lightning`` for us, ``pytorch_lightning`` for schnetpack) that feeds it. Added last, its
    batch end comes after the step and every other callback's batch end, so the time from one batch's
    end to the next one's start is what the loop spends fetching data (reading, collation, neighbour
    lists)."""

    def __init__(self, warmup: int = LOOP_WARMUP):
        self.warmup = warmup  # steps left out of the rates
        self.starts: list[float] = []
        self.ends: list[float] = []

    def callback(self, base: type):
        starts, ends = self.starts, self.ends

        class Timer(base):
            def on_train_batch_start(self, *args) -> None:
                starts.append(time.perf_counter())

            def on_train_batch_end(self, *args) -> None:
                ends.append(time.perf_counter())

        return Timer()

    def throughput(self) -> float:
        """Structures per second between batch starts after the warm-up."""
        timed_steps = self.starts[self.warmup :]
        return BATCH * (len(timed_steps) - 1) / (timed_steps[-1] - timed_steps[0])

    def data_fraction(self) -> float:
        """The share of the loop's time between a batch's end and the next batch's start."""
        starts, ends = self.starts[self.warmup :], self.ends[self.warmup :]
        waiting = sum(start - end for end, start in zip(ends, starts[1:]))
        return waiting / (starts[-1] - starts[0])


def median_range(values: list[float], digits: int = 0) -> str:
    """Median, and the range over repeats."""
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def labels(frames) -> tuple:
    """Energies [B] and forces [N, 3] of ASE structures, float32 tensors."""
    import torch

    energy = torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float32)
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames]), dtype=torch.float32)
    return energy, forces


def training_step(predict: Callable[[], tuple], optimizer, energy, forces) -> Callable[[], None]:
    """One step of any code's model: ``predict()`` gives (energies, forces), then the squared errors
    against ``energy`` and ``forces``, backward and ``optimizer``."""

    def step():
        out = predict()
        loss = (out[0] - energy).pow(2).mean() + (out[1] - forces).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def our_step(potential, frames, device: str = "cpu") -> Callable[[], None]:
    """:func:`training_step` of one of our potentials (put in train mode) on ASE ``frames``: graph and
    neighbour list built beforehand, AdamW."""
    import torch

    from dens_lightning.data.atoms import atoms_graph

    potential.train()
    graph = potential.prepare(atoms_graph(frames).to(device))
    energy, forces = (t.to(device) for t in labels(frames))
    optimizer = torch.optim.AdamW(potential.parameters(), lr=1e-4)

    def predict():
        out = potential(graph, create_graph=True)
        return out["energy"], out["forces"]

    return training_step(predict, optimizer, energy, forces)


def calls_per_second(calculator, atoms, calls: int = 50) -> float:
    """ASE calculator calls (energy + forces) per second on ``atoms``, moved a little before each call
    so that nothing is cached; median of ``calls``."""
    rng = np.random.default_rng(0)
    atoms = atoms.copy()
    atoms.calc = calculator

    def call():
        atoms.positions = atoms.positions + rng.normal(0, 1e-3, atoms.positions.shape)
        atoms.get_forces()

    median, _ = timed(call, calls, warmup=5)
    return 1.0 / median


# malloc as the command line runs it: it restarts itself with glibc's huge pages
# (dens_lightning.allocator.restart_with_huge_pages)
HUGE_PAGES_ENV = {"GLIBC_TUNABLES": HUGE_PAGES}
# trial conditions (label, extra arguments, environment) for alternating_trials: a script of yours
# (no tunable) and the command line
MALLOC_CONDITIONS = (("plain", (), {"GLIBC_TUNABLES": None}), ("huge", (), HUGE_PAGES_ENV))


def alternating(items: Sequence, repeat: int) -> list:
    """``items`` in order on even repeats, reversed on odd ones: interleaved trials share the drift."""
    return list(items) if repeat % 2 == 0 else list(items)[::-1]


def trial_environment(env: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment on 2 threads, warnings off, with ``env``: variables to set, or to
    unset where the value is None."""
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    environment.update(env or {})
    return {name: value for name, value in environment.items() if value is not None}


def run_trial(
    module: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    python: str | Path | None = None,
) -> str:
    """Run ``python -m module --trial args`` (e.g. ``bench.peers``) in its own process
    (:func:`trial_environment` with ``env``; ``python``: another environment's interpreter), in
    ``cwd`` (default :data:`ROOT`); its last line of output. :data:`ROOT` goes last on
    ``PYTHONPATH``, so ``bench`` is found from any ``cwd``, after whatever ``env`` puts first (an
    earlier checkout's ``dens_lightning``, say)."""
    environment = trial_environment(env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [environment.get("PYTHONPATH"), str(ROOT)]))
    done = subprocess.run(
        [str(python or sys.executable), "-m", module, "--trial", *args],
        capture_output=True,
        text=True,
        cwd=ROOT if cwd is None else cwd,
        env=environment,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{module} --trial {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return lines[-1]


def alternating_trials(module: str, conditions: Sequence, repeat: int, *args: str) -> dict[str, dict]:
    """One :func:`run_trial` of ``module args`` per condition ``(label, extra arguments, env)``, in
    :func:`alternating` order for ``repeat``; each trial's JSON result by label, in that order."""
    return {
        label: json.loads(run_trial(module, *args, *extra, env=env))
        for label, extra, env in alternating(conditions, repeat)
    }


def runner_loop(
    stage: str, overrides: list[str], run_dir: Path, warmup: int = LOOP_WARMUP, device: str = "cpu"
) -> StepTimes:
    """``run_finetune`` or ``run_pretrain`` (``stage``) as the CLI runs them, on ``device`` (one
    device), with a :class:`StepTimes` callback; returns it."""
    import lightning

    from dens_lightning.config import load_config
    from dens_lightning.runner import run_finetune, run_pretrain

    timer = StepTimes(warmup)
    shutil.rmtree(run_dir, ignore_errors=True)
    runner = run_pretrain if stage == "pretrain" else run_finetune
    on_device = [f"trainer.accelerator={accelerator(device)}", "trainer.devices=1"]
    config = load_config(stage, overrides=[*overrides, *on_device])
    runner(config, run_dir, progress=False, callbacks=[timer.callback(lightning.Callback)])
    return timer


def loop_overrides(data: Path, frames: int, backbone: str, steps: int) -> list[str]:
    """Training on ``data`` (all but 50 of its ``frames``), batch :data:`BATCH`, ``backbone``, the
    warm-up and ``steps`` timed steps, validation off."""
    return [
        f"data.path={data}",
        f"data.split=[{frames - 50},50,0]",
        f"data.batch_size={BATCH}",
        f"model.name={backbone}",
        f"trainer.max_steps={LOOP_WARMUP + steps + 1}",
        "trainer.limit_val_batches=0",
    ]
