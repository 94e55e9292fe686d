"""Checkpoints written before pretraining and finetuning trained one model object (pretraining held
the backbone and heads directly, finetuning a ``potential`` beside the DeNS heads) still resume, to
the same weights as a checkpoint in today's layout."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from dens_lightning.artifacts import load_checkpoint
from dens_lightning.cli import main
from dens_lightning.models.training_model import current_layout
from dens_lightning.warm_start import pretrained_backbone

DATA = [
    "--no-progress",
    "data.embedded.smiles_file=null",
    "data.embedded.smiles=[CCO,CC(=O)O]",
    "data.embedded.conformers=2",
    "data.embedded.samples=6",
    "data.batch_size=4",
    "model.name=schnet",
    "model.hidden_channels=16",
    "model.num_interactions=2",
]
FORMER = {
    "pretrain": {
        "model.potential.backbone.": "backbone.",
        "model.noise_head.": "noise_head.",
        "model.force_encoder.": "force_encoder.",
        "model.potential.energy_head.": None,  # pretraining had no energy head
    },
    "finetune": {
        "model.potential.": "potential.",
        "model.noise_head.": "noise_head.",
        "model.force_encoder.": "force_encoder.",
    },
}


def former_layout(state: dict, stage: str) -> dict:
    out = {}
    for key, value in state.items():
        prefix = next((p for p in FORMER[stage] if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        elif FORMER[stage][prefix] is not None:
            out[FORMER[stage][prefix] + key.removeprefix(prefix)] = value
    return out


def test_former_layouts_are_renamed_and_todays_kept():
    state = {
        "model.potential.backbone.w": torch.ones(1),
        "model.potential.energy_head.scale": torch.full((3,), 2.0),
        "model.noise_head.b": torch.zeros(2),
        "loss_scale": torch.ones(()),
    }
    assert current_layout(state, {}) is state
    finetune = former_layout(state, "finetune")
    assert set(finetune) == {
        "potential.backbone.w",
        "potential.energy_head.scale",
        "noise_head.b",
        "loss_scale",
    }
    assert current_layout(finetune, state).keys() == state.keys()
    pretrain = former_layout(state, "pretrain")
    assert set(pretrain) == {"backbone.w", "noise_head.b", "loss_scale"}
    own = {"model.potential.energy_head.scale": torch.full((3,), 7.0), "model.other": torch.ones(1)}
    upgraded = current_layout(pretrain, own)
    assert upgraded.keys() == state.keys()  # the missing energy head from the task's own state, nothing else
    assert torch.equal(
        upgraded["model.potential.energy_head.scale"], own["model.potential.energy_head.scale"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, extra",
    [
        ("pretrain", ["task.dens.enabled=true", "data.embedded.labeller=mmff"]),
        ("finetune", ["task.dens.enabled=true"]),
    ],
)
def test_a_checkpoint_in_the_former_layout_resumes_like_todays(tmp_path, stage, extra):
    first = tmp_path / "today"
    assert main([stage, "--run-dir", str(first), *DATA, *extra, "trainer.max_epochs=1"]) == 0
    former = tmp_path / "former"
    shutil.copytree(first, former)
    for path in (former / "checkpoints").glob("*.ckpt"):
        checkpoint = load_checkpoint(path)
        for key in ("state_dict", "current_model_state"):
            if key in checkpoint:
                checkpoint[key] = former_layout(checkpoint[key], stage)
        torch.save(checkpoint, path)
    assert not any(
        k.startswith("model.") for k in load_checkpoint(former / "checkpoints" / "last.ckpt")["state_dict"]
    )
    assert pretrained_backbone(former / "checkpoints" / "last.ckpt").state  # a --from source still
    for run in (first, former):
        assert main([stage, "--run-dir", str(run), "--resume", "--no-progress", "trainer.max_epochs=2"]) == 0
    today, resumed = load_file(first / "model.safetensors"), load_file(former / "model.safetensors")
    assert today.keys() == resumed.keys()
    for key, value in today.items():
        assert torch.equal(value, resumed[key]), key
