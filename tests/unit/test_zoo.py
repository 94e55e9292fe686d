"""The model zoo: listing, the SHA-256 check, and zoo:NAME wherever a model path is taken."""

import hashlib
import json

import pytest
import torch
from ase.build import molecule

from dens_lightning import load_model
from dens_lightning.calculator import DensCalculator
from dens_lightning.cli import main
from dens_lightning.errors import InputError
from dens_lightning.zoo import add_entry, entries


@pytest.fixture
def zoo(tmp_path, monkeypatch, trained):
    """A zoo folder holding the session's trained model as ``zoo:tiny``."""
    monkeypatch.setenv("DENS_LIGHTNING_ZOO", str(tmp_path / "zoo"))
    add_entry("tiny", trained / "model.safetensors", "python scripts/zoo_entry.py tiny", "a tiny SchNet")
    return tmp_path / "zoo"


def test_the_listing_names_each_model_with_its_hash_and_size(zoo, trained, capsys):
    assert main(["zoo"]) == 0
    text = capsys.readouterr().out
    assert "zoo:tiny" in text and "schnet" in text
    assert main(["zoo", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    data = (trained / "model.safetensors").read_bytes()
    assert listed["sha256"] == hashlib.sha256(data).hexdigest()
    assert listed["file_mb"] == round(len(data) / 2**20, 2)
    backbone = load_model(trained).backbone
    assert listed["backbone_parameters"] == sum(p.numel() for p in backbone.state_dict().values())
    assert listed["rebuild"] == "python scripts/zoo_entry.py tiny"
    add_entry("tiny", trained / "model.safetensors", "again")  # replacing an entry keeps one
    assert [item.rebuild for item in entries()] == ["again"]


def test_a_zoo_model_is_the_shipped_potential(zoo, trained):
    atoms = molecule("CH3CH2OH")
    want, got = load_model(trained)([atoms]), load_model("zoo:tiny")([atoms])
    assert torch.equal(want["energy"], got["energy"]) and torch.equal(want["forces"], got["forces"])
    atoms.calc = DensCalculator("zoo:tiny")
    assert atoms.get_potential_energy() == pytest.approx(float(want["energy"][0]), abs=1e-5)


def test_a_damaged_missing_or_unknown_file_is_one_clear_line(zoo, capsys):
    path = zoo / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="zoo:tiny: .* is damaged"):
        load_model("zoo:tiny")
    assert main(["info", "zoo:tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is damaged" in err and len(err.splitlines()) == 1
    path.unlink()
    with pytest.raises(InputError, match="is missing; reinstall the package or rebuild it: python scripts"):
        load_model("zoo:tiny")
    with pytest.raises(InputError, match=r"zoo:other: no such model .* \(shipped: tiny\)"):
        load_model("zoo:other")


def test_every_shipped_model_passes_its_check_and_loads(monkeypatch):
    monkeypatch.delenv("DENS_LIGHTNING_ZOO", raising=False)
    shipped = entries()
    assert shipped, "the package ships at least one model"
    for item in shipped:
        model = load_model(f"zoo:{item.name}")
        assert model.metadata["stage"] == "pretrain" and model.metadata["objective"] != "denoise"


def test_a_zoo_start_gives_its_recorded_pretraining_time_to_the_compute_matched_arm(zoo, trained, tmp_path):
    from dens_lightning.experiment.spec import PretrainSpec, TransferConfig
    from dens_lightning.experiment.transfer import TransferExperiment

    add_entry("timed", trained / "model.safetensors", "rebuild", pretraining_seconds=120.0)
    spec = TransferConfig(sizes=[4], seeds=[0], steps=100, compute_matched=True)
    spec.pretrain = PretrainSpec(model="zoo:timed")
    experiment = TransferExperiment(spec, tmp_path / "exp")
    scratch = tmp_path / "exp" / "runs" / "scratch-n4-seed0"
    scratch.mkdir(parents=True)
    (scratch / "wall_seconds.txt").write_text("40.0\n")
    assert experiment.pretraining_seconds() == 120.0
    assert experiment.compute_matched_steps(4, 0) == 100 * (1 + 3)
    spec.pretrain = PretrainSpec(model="zoo:tiny")  # recorded without a wall time
    with pytest.raises(InputError, match="zoo:tiny: compute_matched needs the pretraining's wall time"):
        TransferExperiment(spec, tmp_path / "exp").pretraining_seconds()
