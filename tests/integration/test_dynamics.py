"""Molecular dynamics with a trained model: NVE conserves energy; the dynamics guide's example runs."""

import re

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from dens_lightning import load_model
from dens_lightning.calculator import DensCalculator
from dens_lightning.cli import main
from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "guides" / "dynamics.md"
TIMESTEP_FS = 0.5


def nve_energies(atoms, steps: int) -> np.ndarray:
    """Total energy (eV) after each velocity-Verlet step of ``TIMESTEP_FS``."""
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(steps)
    return np.array(energies)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_nve_conserves_energy(trained, dtype):
    """Ethanol at 300 K from the model's minimum, 1,000 steps of 0.5 fs: the total energy neither
    drifts nor fluctuates beyond what a smooth conservative model allows (measured: 4.7e-5
    eV/atom/ps and 2.8e-4 eV; noisy forces of 0.05 eV/Å give 8e-3 eV/atom/ps)."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = DensCalculator(load_model(trained).to(dtype))
    assert BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    ZeroRotation(atoms)
    energies = nve_energies(atoms, steps=1000)
    picoseconds = np.arange(len(energies)) * TIMESTEP_FS * 1e-3
    drift = np.polyfit(picoseconds, energies, 1)[0] / len(atoms)  # eV/atom/ps
    print(f"NVE drift {drift:.2e} eV/atom/ps, fluctuation {energies.std():.2e} eV ({dtype})")
    assert abs(drift) < 1e-3
    assert energies.std() < 2e-3
    assert atoms.get_temperature() > 20  # it moved: the check above is not of a molecule at rest


@pytest.mark.slow
def test_the_guide_langevin_example_runs(trained, tmp_path, monkeypatch, capsys):
    section = GUIDE.read_text()
    command = re.search(r"```\n(python -m dens_lightning sample .*?)\n```", section).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = re.sub(r'^MODEL = ".*?"', f'MODEL = "{trained}"', code, flags=re.M)
    code, replaced = re.subn(r"^STEPS = \d+", "STEPS = 20", code, flags=re.M)
    assert replaced == 1
    monkeypatch.chdir(tmp_path)
    argv = re.findall(r'"[^"]*"|\S+', command)[3:]  # after "python -m dens_lightning"
    assert main([a.strip('"') for a in argv]) == 0
    exec(compile(code, str(GUIDE), "exec"), {})
    assert " 0 fs" in capsys.readouterr().out
    from ase.io import read

    frames = read(tmp_path / "aspirin.traj", index=":")
    assert len(frames) == 21 and len(frames[-1]) == 21  # initial + 20 steps, 21 atoms of aspirin


def run_block(code: str, where: str, trained) -> dict:
    """A documented block run on a trained model (its placeholder path replaced, MD kept short)."""
    code = code.replace('"runs/finetune/<run>"', f'"{trained}"')
    code = re.sub(r"\.run\(\d+\)", ".run(10)", code)
    assert str(trained) in code
    namespace: dict = {}
    exec(compile(code, where, "exec"), namespace)
    return namespace


@pytest.mark.slow
def test_the_readme_tour_dynamics_runs(trained):
    """The README's five-minute tour ends in Langevin dynamics: its code runs on a trained model."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 1
    namespace = run_block(blocks[0], "README.md", trained)
    assert np.isfinite(namespace["atoms"].get_potential_energy())


@pytest.mark.slow
def test_the_guide_calculator_example_runs(trained):
    block = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)[-1]
    namespace = run_block(block, str(GUIDE), trained)
    assert namespace["forces"].shape == (9, 3) and len(namespace["results"]) == 2
    assert namespace["results"][0]["energy"] == pytest.approx(namespace["energy"], abs=1e-4)
