"""The "Add your own backbone" how-to's example is real code: registered, it passes the conformance
suite the package ships (:class:`dens_lightning.testing.BackboneConformance`), by subclassing as the
how-to says."""

import re
from contextlib import contextmanager

import pytest

from dens_lightning.models import BACKBONES
from dens_lightning.testing import BackboneConformance
from tests.conftest import ROOT

HOWTO = ROOT / "docs" / "howto" / "backbone.md"


def howto_backbone_code() -> str:
    return re.search(r"```python\n(.*?)```", HOWTO.read_text(), re.S).group(1)


@contextmanager
def howto_backbone():
    """The how-to's backbone, registered as ``mynet`` while the block runs."""
    namespace: dict = {}
    exec(compile(howto_backbone_code(), str(HOWTO), "exec"), namespace)
    try:
        yield "mynet"
    finally:
        BACKBONES.pop("mynet", None)


class TestHowtoBackbone(BackboneConformance):
    backbone = "mynet"
    hyperparameters = {"hidden": 16, "cutoff": 4.0}

    @pytest.fixture(scope="class", autouse=True)
    def _registered(self):
        with howto_backbone() as name:
            assert name in BACKBONES
            yield


@pytest.fixture
def mynet():
    with howto_backbone() as name:
        yield name


def test_dens_on_a_backbone_without_head_blocks_names_the_key(mynet):
    from dens_lightning.config import load_config
    from dens_lightning.errors import InputError

    dens = [f"model.name={mynet}", "task.dens.enabled=true", "task.dens.force_encoding=false"]
    load_config("finetune", overrides=dens)  # the default head has no message-passing block
    with pytest.raises(InputError, match="task.dens.head_blocks=1") as err:
        load_config("finetune", overrides=[*dens, "task.dens.head_blocks=1"])
    assert "\n" not in str(err.value)
    load_config("pretrain", overrides=[f"model.name={mynet}"])  # pretraining's default head has no blocks
