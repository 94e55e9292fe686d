"""The README's "Add your own backbone" example is real code: registered, it passes the conformance suite."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dens_lightning.models import BACKBONES

from . import test_backbones as suite
from .conftest import random_molecule

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_backbone_code() -> str:
    section = README.read_text().split("## Add your own backbone", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def mynet():
    namespace: dict = {}
    exec(compile(readme_backbone_code(), str(README), "exec"), namespace)
    suite.SMALL["mynet"] = {"hidden": 16, "cutoff": 4.0}
    yield "mynet"
    BACKBONES.pop("mynet", None)
    suite.SMALL.pop("mynet", None)


def test_readme_backbone_passes_the_conformance_suite(mynet, tmp_path, capsys):
    assert mynet in BACKBONES
    rng = np.random.default_rng(0)
    molecules = [random_molecule(n, rng) for n in (5, 9, 13)]

    def batch_of(dtype=torch.float64):
        from dens_lightning.data.graph import collate

        from .conftest import molecule_graph

        return collate([molecule_graph(z, p, dtype) for z, p in molecules])

    for dtype in suite.DTYPES:
        suite.test_rotation_reflection_translation(mynet, dtype, molecules)
        suite.test_permutation(mynet, dtype, molecules)
        suite.test_batch_equals_molecules_one_by_one(mynet, dtype, batch_of, molecules)
        suite.test_periodic_images_wrapping_changes_nothing(mynet, dtype)
        suite.test_noise_prediction_is_equivariant(mynet, dtype, 0, molecules)
    suite.test_forces_are_minus_finite_difference_gradient(mynet, molecules)
    suite.test_stress_is_the_strain_derivative_of_the_energy(mynet)
    suite.test_no_gradient_leaks_between_molecules(mynet, batch_of)
    suite.test_energy_smooth_as_atom_crosses_cutoff(mynet)
    suite.test_backbones_without_force_encoding_refuse_node_inputs(mynet, molecules)
    suite.test_every_backbone_pretrains_and_finetunes_through_the_cli(mynet, tmp_path, capsys)


def test_dens_on_a_backbone_without_head_blocks_names_the_key(mynet):
    from dens_lightning.config import load_config
    from dens_lightning.errors import InputError

    dens = [f"model.name={mynet}", "task.dens.enabled=true", "task.dens.force_encoding=false"]
    load_config("finetune", overrides=dens)  # the default head has no message-passing block
    with pytest.raises(InputError, match="task.dens.head_blocks=1") as err:
        load_config("finetune", overrides=[*dens, "task.dens.head_blocks=1"])
    assert "\n" not in str(err.value)
    load_config("pretrain", overrides=[f"model.name={mynet}"])  # pretraining's default head has no blocks
