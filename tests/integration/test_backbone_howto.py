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


def howto_blocks() -> list[str]:
    """The how-to's Python blocks: the backbone, then the conformance suite's subclass."""
    return re.findall(r"```python\n(.*?)```", HOWTO.read_text(), re.S)


def howto_backbone_code() -> str:
    return howto_blocks()[0]


def howto_suite_class() -> type:
    """The how-to's own ``TestMyNet``, as it is written there."""
    namespace: dict = {}
    exec(compile(howto_blocks()[1], str(HOWTO), "exec"), namespace)
    return namespace["TestMyNet"]


@contextmanager
def howto_backbone():
    """The how-to's backbone, registered as ``mynet`` while the block runs."""
    namespace: dict = {}
    exec(compile(howto_backbone_code(), str(HOWTO), "exec"), namespace)
    try:
        yield "mynet"
    finally:
        BACKBONES.pop("mynet", None)


class TestHowtoBackbone(howto_suite_class()):
    """The how-to's subclass of the suite, run with the how-to's backbone registered."""

    @pytest.fixture(scope="class", autouse=True)
    def _registered(self):
        with howto_backbone() as name:
            assert name in BACKBONES
            yield


@pytest.fixture
def mynet():
    with howto_backbone() as name:
        yield name


def test_the_howto_subclasses_the_shipped_suite():
    assert issubclass(TestHowtoBackbone, BackboneConformance)
    assert TestHowtoBackbone.backbone == "mynet"


def test_dens_on_a_backbone_without_head_blocks_names_the_key(mynet):
    from dens_lightning.config import load_config
    from dens_lightning.errors import InputError

    dens = [f"model.name={mynet}", "task.dens.enabled=true", "task.dens.force_encoding=false"]
    load_config("finetune", overrides=dens)  # the default head has no message-passing block
    with pytest.raises(InputError, match="task.dens.head_blocks=1") as err:
        load_config("finetune", overrides=[*dens, "task.dens.head_blocks=1"])
    assert "\n" not in str(err.value)
    load_config("pretrain", overrides=[f"model.name={mynet}"])  # pretraining's default head has no blocks
