"""export: the exported graph gives the eager model's energies, forces and virial, at any size."""

import json
import shutil

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from dens_lightning.artifacts import model_metadata, pretrain_metadata, save_model
from dens_lightning.cli import main
from dens_lightning.errors import InputError
from dens_lightning.export import ExportedModel, export_and_check, export_model, fingerprint, has_cxx_compiler
from tests.conftest import random_molecule
from tests.unit.models import test_backbones as suite

TOLERANCE = 1e-5  # eV, eV/Å


def structures():
    """Sizes the tracing example did not have: one atom, a large molecule, a periodic cell."""
    rng = np.random.default_rng(11)
    images = [Atoms(numbers=z, positions=p) for z, p in (random_molecule(n, rng) for n in (1, 3, 11, 23))]
    crystal = bulk("C", "diamond", a=3.57).repeat((2, 2, 1))
    crystal.rattle(0.05, seed=2)
    return [*images, crystal]


def assert_matches_eager(exported, potential, images):
    got = exported.predict(images)
    want = potential(images, compute_virial=True)
    for key in ("energy", "forces", "virial"):
        assert got[key].shape == want[key].shape
        difference = float((got[key] - want[key].detach()).abs().max())
        assert difference < TOLERANCE, (key, difference)


def finetuned(name, dtype=torch.float32):
    potential = suite.make_potential(name, dtype)
    potential.metadata = model_metadata(potential, stage="finetune")
    return potential


@pytest.mark.parametrize("name", sorted(suite.SMALL))
def test_exported_program_matches_eager(name, tmp_path):
    potential = finetuned(name)
    report = export_and_check(potential, tmp_path / "model.pt2")
    assert report["max_abs_difference_forces_eV/A"] < TOLERANCE
    exported = ExportedModel(tmp_path / "model.pt2")
    assert exported.cutoff == potential.cutoff
    assert exported.metadata["elements"] == [1, 6, 7, 8]
    images = structures()
    assert_matches_eager(exported, potential, images)
    assert_matches_eager(exported, potential, images[2:3])  # one structure alone


def test_exported_program_loads_with_torch_alone(tmp_path):
    """What a user without dens_lightning does: torch.export.load and the documented inputs."""
    potential = finetuned("painn", torch.float64)
    export_model(potential, tmp_path / "m.pt2")
    extra = {"dens_lightning.json": ""}
    fn = torch.export.load(str(tmp_path / "m.pt2"), extra_files=extra).module()
    assert json.loads(extra["dens_lightning.json"])["export"]["inputs"][0] == "z"
    graph = potential.prepare(suite.periodic_graph(suite.triclinic_cell()))
    inputs = (graph.z, graph.pos, graph.cell, graph.batch, graph.edge_index, graph.edge_shift)
    energy, forces, virial = fn(*inputs)
    want = potential(graph, compute_virial=True)
    torch.testing.assert_close(energy, want["energy"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, want["forces"].detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(virial, want["virial"].detach(), rtol=0, atol=1e-10)


@pytest.mark.slow
@pytest.mark.skipif(not has_cxx_compiler(), reason="AOTInductor needs a C++ compiler")
def test_aoti_package_matches_eager(tmp_path):
    """AOTInductor: compiled C++ (the library C++ programs load), here loaded back in Python."""
    potential = finetuned("schnet")
    export_and_check(potential, tmp_path / "model.pt2", format="aoti")
    assert_matches_eager(ExportedModel(tmp_path / "model.pt2"), potential, structures())


def test_a_potential_built_in_code_exports_what_predict_needs(tmp_path):
    potential = suite.make_potential("schnet", torch.float32)  # no metadata at all
    export_and_check(potential, tmp_path / "model.pt2")
    exported = ExportedModel(tmp_path / "model.pt2")
    assert exported.cutoff == potential.cutoff and exported.dtype == torch.float32
    assert_matches_eager(exported, potential, structures())


@pytest.mark.parametrize("form", ["pt2", pytest.param("aoti", marks=pytest.mark.slow)])
def test_calculator_runs_an_exported_file_like_the_model(form, tmp_path):
    from dens_lightning.calculator import DensCalculator

    potential = finetuned("painn")
    export_and_check(potential, tmp_path / "model.pt2", format=form)
    eager, exported = DensCalculator(potential), DensCalculator(tmp_path / "model.pt2")
    for atoms in structures()[2:]:  # a molecule, then a periodic cell (with its stress)
        want = eager.batch([atoms])[0]
        got = exported.batch([atoms])[0]
        assert set(got) == set(want)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, atol=TOLERANCE, rtol=0)


def test_fingerprint_follows_weights_hyperparameters_metadata_and_device():
    potential = finetuned("schnet")
    first = fingerprint(potential, "cpu")
    assert fingerprint(finetuned("schnet"), "cpu") == first  # the same model built again
    assert fingerprint(potential, "cuda") != first
    potential.metadata = {**potential.metadata, "stage": "pretrain"}
    assert fingerprint(potential, "cpu") != first
    potential = finetuned("schnet")
    with torch.no_grad():
        potential.backbone.interactions[0].filter_net[0].bias[3] += 1e-6
    assert fingerprint(potential, "cpu") != first
    other = suite.make_potential("schnet", torch.float32)
    other.metadata = dict(finetuned("schnet").metadata)
    assert fingerprint(other, "cpu") == first  # metadata and weights equal: the same file
    assert fingerprint(finetuned("painn"), "cpu") != first


def test_compiling_without_a_compiler_says_so(tmp_path, monkeypatch):
    from dens_lightning.calculator import DensCalculator

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("DENS_LIGHTNING_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="C\\+\\+ compiler"):
        DensCalculator(finetuned("schnet"), compile=True)


@pytest.mark.slow
@pytest.mark.skipif(not has_cxx_compiler(), reason="AOTInductor needs a C++ compiler")
def test_calculator_compiles_once_then_takes_the_cached_file(tmp_path, monkeypatch):
    from dens_lightning.calculator import DensCalculator
    from dens_lightning.export import packaging  # compiled() calls its export_and_check

    monkeypatch.setenv("DENS_LIGHTNING_CACHE", str(tmp_path / "cache"))
    potential = finetuned("schnet")
    compiled = DensCalculator(potential, compile=True)
    (cached,) = (tmp_path / "cache" / "aoti").glob("*.pt2")
    assert compiled.exported is not None and compiled.exported.path == cached
    eager = DensCalculator(potential)
    for atoms in structures()[2:]:
        want, got = eager.batch([atoms])[0], compiled.batch([atoms])[0]
        assert set(got) == set(want)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, atol=TOLERANCE, rtol=0)

    def no_second_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(packaging, "export_and_check", no_second_compile)
    again = DensCalculator(finetuned("schnet"), compile=True)
    assert again.exported.path == cached


def test_export_command(tmp_path, capsys):
    potential = finetuned("schnet")
    path = save_model(potential, tmp_path / "model.safetensors", potential.metadata)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "out.pt2")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out"] == str(tmp_path / "out.pt2") and report["format"] == "pt2"
    assert report["max_abs_difference_energy_eV"] < TOLERANCE
    assert ExportedModel(tmp_path / "out.pt2").metadata["backbone"]["name"] == "schnet"
    # a pretrained backbone is not a potential: refused with the way forward
    backbone = potential.backbone
    save_model(potential, path, pretrain_metadata(backbone))
    assert main(["export", str(path), "--out", str(tmp_path / "x.pt2")]) == 2
    assert "finetune it first" in capsys.readouterr().err
    assert not (tmp_path / "x.pt2").exists()


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.pt2: not a dens_lightning export"):
        ExportedModel(tmp_path / "junk.pt2")
