"""model.safetensors: round trip without pickle, metadata, refusal of foreign files."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from dens_lightning import load_model
from dens_lightning.artifacts import FORMAT_VERSION, METADATA_KEY, model_metadata, read_metadata, save_model
from dens_lightning.cli import main
from dens_lightning.errors import InputError
from dens_lightning.models.potential import Potential
from dens_lightning.warm_start import pretrained_backbone
from tests.conftest import molecule_graph, random_molecule


def small_potential(dtype=torch.float32):
    torch.manual_seed(0)
    potential = Potential.build(
        "schnet", {"hidden_channels": 8, "num_filters": 8, "num_interactions": 1, "num_rbf": 6}
    )
    potential.energy_head.set_statistics({1: -13.6, 6: -1030.0, 8: -2040.0}, 1.5)
    return potential.to(dtype)


def test_round_trip_gives_identical_predictions(tmp_path):
    potential = small_potential()
    path = save_model(potential, tmp_path / "model.safetensors", model_metadata(potential, stage="finetune"))
    loaded = load_model(path)
    z, pos = random_molecule(7, np.random.default_rng(2))
    graph = molecule_graph(z, pos, torch.float32)
    expected, got = potential.eval()(graph), loaded(graph)
    torch.testing.assert_close(got["energy"], expected["energy"], rtol=0, atol=0)
    torch.testing.assert_close(got["forces"], expected["forces"], rtol=0, atol=0)
    assert loaded.metadata["elements"] == [1, 6, 8]
    assert loaded.metadata["energy_references_eV"]["6"] == pytest.approx(-1030.0)
    assert loaded.metadata["backbone"]["hyperparameters"]["hidden_channels"] == 8
    # saving the loaded model again gives the same file, byte for byte: tensors, dtypes and metadata
    again = save_model(loaded, tmp_path / "again.safetensors", loaded.metadata)
    assert again.read_bytes() == path.read_bytes()


@pytest.mark.slow
def test_trained_model_saved_loaded_and_saved_again_is_byte_stable(trained, tmp_path):
    from safetensors.torch import load_file

    original = trained / "model.safetensors"
    model = load_model(original)
    again = save_model(model, tmp_path / "again.safetensors", model.metadata)
    first, second = load_file(str(original)), load_file(str(again))
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype, name
        assert first[name].numpy().tobytes() == second[name].numpy().tobytes(), name
    assert again.read_bytes() == original.read_bytes()


def test_float64_model_stays_float64(tmp_path):
    potential = small_potential(torch.float64)
    path = save_model(potential, tmp_path / "m.safetensors", model_metadata(potential, stage="finetune"))
    assert next(load_model(path).parameters()).dtype == torch.float64


def _write_metadata(path, metadata):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(path), metadata={METADATA_KEY: json.dumps(metadata)})


def test_newer_format_and_missing_metadata_get_clear_messages(tmp_path):
    newer = tmp_path / "newer.safetensors"
    _write_metadata(newer, {"format_version": FORMAT_VERSION + 1, "package_version": "9.0"})
    with pytest.raises(InputError, match="upgrade"):
        read_metadata(newer)
    partial = tmp_path / "partial.safetensors"
    _write_metadata(partial, {"format_version": FORMAT_VERSION})
    with pytest.raises(InputError, match="lacks 'backbone'"):
        read_metadata(partial)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(InputError, match="no dens_lightning metadata"):
        read_metadata(foreign)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("name", ["evil.ckpt", "evil.safetensors"])
def test_crafted_pickle_is_refused_without_running_it(tmp_path, capsys, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _Exploit(str(marker))}, handle)
    with pytest.raises(InputError):
        pretrained_backbone(path)
    assert main(["finetune", "--from", str(path), "--run-dir", str(tmp_path / "run")]) == 2
    assert main(["info", str(path)]) == 2
    assert not marker.exists()
    assert name in capsys.readouterr().err
