"""What the bench scripts share: the machine line, timing, aspirin data and writing BENCHMARKS.md."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

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


def timed(fn: Callable[[], object], repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median and spread (max - min) of ``repeats`` timed calls, in seconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples) - min(samples)


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


def write_section(name: str, lines: list[str]) -> None:
    """Put ``lines`` into BENCHMARKS.md between ``<!-- name -->`` and ``<!-- /name -->``, in place of
    the previous section of that name or at the end, and print them."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if start in text:
        text = text[: text.index(start)] + text[text.index(end) + len(end) :].lstrip("\n")
    BENCHMARKS.write_text(text.rstrip("\n") + "\n\n" + "\n".join([start, *lines, end]) + "\n")
    print("\n".join(lines))


class StepTimes:
    """Records when each training batch starts and ends; :meth:`callback` makes the Lightning callback
    (of ``lightning`` for us, ``pytorch_lightning`` for schnetpack) that feeds it. Added last, its
    batch end comes after the step and every other callback's batch end, so the time from one batch's
    end to the next one's start is what the loop spends fetching data (reading, collation, neighbour
    lists)."""

    def __init__(self):
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
        timed_steps = self.starts[LOOP_WARMUP:]
        return BATCH * (len(timed_steps) - 1) / (timed_steps[-1] - timed_steps[0])

    def data_fraction(self) -> float:
        """The share of the loop's time between a batch's end and the next batch's start."""
        starts, ends = self.starts[LOOP_WARMUP:], self.ends[LOOP_WARMUP:]
        waiting = sum(start - end for end, start in zip(ends, starts[1:]))
        return waiting / (starts[-1] - starts[0])


def median_range(values: list[float], digits: int = 0) -> str:
    """Median, and the range over repeats."""
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
