"""Denoising pretraining: corruption, noise heads, the pretrain command, and the handoff to finetune."""

import csv
import json
import math
from dataclasses import dataclass

import lightning
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dens_lightning.artifacts import model_metadata, read_metadata, save_model
from dens_lightning.cli import main
from dens_lightning.data.graph import collate
from dens_lightning.data.neighbors import with_neighbors
from dens_lightning.errors import InputError
from dens_lightning.evaluation import evaluate_structures, structure_loader
from dens_lightning.models import BACKBONES
from dens_lightning.models.base import Backbone, BackboneConfig, Features, register_backbone
from dens_lightning.models.heads import GradientNoiseHead, build_noise_head
from dens_lightning.models.potential import Potential
from dens_lightning.runner import run_finetune
from dens_lightning.tasks.dens import PRETRAIN, PRETRAIN_VALIDATION, corrupt, draw, masked_cosine
from dens_lightning.tasks.losses import vector_loss
from dens_lightning.tasks.pretrain import DenoisingPretraining
from dens_lightning.warm_start import finetune_config, read_warm_start
from tests.conftest import molecule_graph, random_molecule

TINY_PRETRAIN = [
    "--no-progress",
    "data.embedded.limit=30",
    "data.embedded.conformers=2",
    "data.embedded.samples=10",
    "data.batch_size=16",
    "task.warmup_steps=5",
    "model.name=schnet",
    "model.hidden_channels=32",
    "model.num_filters=32",
    "model.num_interactions=2",
    "model.num_rbf=12",
]
FINETUNE_FAST = [
    "--no-progress",
    "data.embedded.smiles=[CCO,CC(=O)O]",
    "data.embedded.conformers=2",
    "data.embedded.samples=6",
    "data.batch_size=8",
    "task.warmup_steps=2",
]
SMALL = {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_rbf": 8}


def val_column(run_dir, name):
    with open(run_dir / "metrics.csv") as handle:
        return [float(r[name]) for r in csv.DictReader(handle) if r.get(name)]


def random_batch(dtype=torch.float64, sizes=(5, 8, 11), seed=0):
    rng = np.random.default_rng(seed)
    return collate([molecule_graph(*random_molecule(n, rng), dtype) for n in sizes])


# ------------------------------------------------------------------ corruption


def test_noise_has_the_requested_spread_and_spares_fixed_atoms():
    graph = random_batch(torch.float64, sizes=(400, 600))
    fixed = torch.zeros(1000, dtype=torch.bool)
    fixed[:100] = True
    graph = graph.replace(fixed=fixed)
    c = corrupt(graph, sigma=0.2, draws=draw(graph, 0, PRETRAIN, 0))
    assert c.noise[:100].abs().max() == 0 and not c.mask[:100].any()
    assert c.noise[100:].std().item() == pytest.approx(0.2, rel=0.05)
    torch.testing.assert_close(c.pos - graph.pos, c.noise)
    assert c.target[100:].std().item() == pytest.approx(1.0, rel=0.05)


def test_partial_and_multiscale_corruption():
    graph = random_batch(torch.float64, sizes=(50,) * 200)
    c = corrupt(graph, sigma=0.01, draws=draw(graph, 1, PRETRAIN, 0), sigma_max=1.0, atom_fraction=0.25)
    assert c.mask.double().mean().item() == pytest.approx(0.25, abs=0.03)
    assert c.noise[~c.mask].abs().max() == 0
    per_structure = c.sigma[graph.ptr[:-1]]
    assert per_structure.min() >= 0.01 and per_structure.max() <= 1.0
    # log-uniform: log sigma is uniform, so its mean is the middle of the range
    assert per_structure.log().mean().item() == pytest.approx(math.log(0.1), abs=0.35)
    assert per_structure.std() > 0


def test_fixed_seed_reproduces_the_corruption():
    graph = random_batch()
    first = corrupt(graph, 0.1, draw(graph, 3, PRETRAIN, 7))
    second = corrupt(graph, 0.1, draw(graph, 3, PRETRAIN, 7))
    torch.testing.assert_close(first.noise, second.noise)
    for other in (
        draw(graph, 4, PRETRAIN, 7),
        draw(graph, 3, PRETRAIN, 8),
        draw(graph, 3, PRETRAIN_VALIDATION, 7),
    ):
        assert not torch.equal(first.noise, corrupt(graph, 0.1, other).noise)


def test_masked_losses():
    target = torch.randn(10, 3)
    mask = torch.zeros(10, dtype=torch.bool)
    prediction = torch.zeros(10, 3, requires_grad=True)
    empty = vector_loss(prediction, target, "squared", mask).value
    assert empty.item() == 0.0
    empty.backward()  # still in the graph: every rank of a DDP run gets a gradient
    assert prediction.grad is not None
    mask[:4] = True
    assert vector_loss(torch.zeros(10, 3), target, "squared", mask).value.item() == pytest.approx(
        target[:4].pow(2).mean().item()
    )
    assert vector_loss(torch.zeros(10, 3), target, "norm", mask).value.item() == pytest.approx(
        target[:4].norm(dim=1).mean().item()
    )
    assert masked_cosine(target, target, mask).value.item() == pytest.approx(1.0)
    assert masked_cosine(-target, target, mask).value.item() == pytest.approx(-1.0)


# ------------------------------------------------------------------ noise heads


def test_gradient_head_is_the_position_gradient_of_a_scalar():
    torch.manual_seed(0)
    potential = Potential.build("schnet", dict(SMALL)).double()
    head = GradientNoiseHead(potential.backbone.num_features).double()
    graph = random_batch()
    pos = graph.pos.clone().requires_grad_(True)
    graph = with_neighbors(graph.with_positions(pos), 5.0)
    predicted = head(potential.backbone(graph), graph)

    def scalar(p):
        g = with_neighbors(graph.with_positions(p), 5.0)
        return head.mlp(potential.backbone(g).scalars).sum()

    h = 1e-5
    for atom, axis in [(0, 0), (7, 2)]:
        plus, minus = pos.detach().clone(), pos.detach().clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric = (scalar(plus) - scalar(minus)) / (2 * h)
        assert predicted[atom, axis].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_noise_head_is_not_part_of_the_backbone():
    task = DenoisingPretraining("schnet", dict(SMALL), {"lr": 1e-3, "noise": {"sigma": 0.1}})
    backbone_names = set(task.backbone.state_dict())
    assert not any("noise" in name for name in backbone_names)
    assert isinstance(build_noise_head(task.backbone), GradientNoiseHead)


# ------------------------------------------------------------------ pretrain end to end


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pre") / "pretrain"
    argv = ["pretrain", "--run-dir", str(run_dir), *TINY_PRETRAIN, "trainer.max_epochs=4", "task.lr=2e-3"]
    assert main(argv) == 0
    return run_dir


@pytest.mark.slow
def test_pretraining_learns_to_denoise(pretrained):
    loss, cosine = val_column(pretrained, "val/loss"), val_column(pretrained, "val/cosine")
    assert len(loss) == 4
    assert loss[-1] < 0.85  # predicting zero scores 1.0
    assert cosine[-1] > 0.35
    metadata = read_metadata(pretrained / "model.safetensors")
    assert metadata["stage"] == "pretrain"
    assert metadata["noise"]["sigma"] == 0.1
    card = (pretrained / "README.md").read_text()
    assert "denoising-pretrained backbone" in card and "not a potential" in card
    assert f"python -m dens_lightning finetune --from {pretrained}" in card
    assert metadata["data"]["embedded_store"]["sampler"]["method"] == "normal-mode"
    assert set(metadata["elements"]) <= {1, 6, 7, 8, 9, 16, 17}
    assert metadata["validation"]["noise_loss"] == pytest.approx(min(loss), rel=1e-5)
    tensors = load_file(str(pretrained / "model.safetensors"))
    assert any(k.startswith("noise_head.") for k in tensors)
    assert not any(k.startswith("energy_head.") for k in tensors)


@pytest.mark.slow
def test_validation_noise_is_fixed_across_epochs(pretrained):
    """Two evaluations of the same model on the same batch give the same validation loss."""
    from dens_lightning.artifacts import load_checkpoint

    checkpoint = load_checkpoint(pretrained / "checkpoints" / "last.ckpt")
    hp = checkpoint["hyper_parameters"]
    task = DenoisingPretraining(hp["model_name"], hp["model_hparams"], hp["task"])
    task.load_state_dict(checkpoint["state_dict"])
    task.eval()
    graph = with_neighbors(random_batch(torch.float32), 5.0)
    losses = [task.losses(graph, PRETRAIN_VALIDATION)["noise"].value.item() for _ in range(2)]
    assert losses[0] == losses[1]
    assert task.losses(graph, PRETRAIN, step=5)["noise"].value.item() != losses[0]


@pytest.mark.slow
def test_pretrained_model_cannot_be_used_as_a_potential(pretrained, capsys):
    assert main(["test", "--model", str(pretrained), "--data", "x.xyz"]) == 2
    assert "finetune --from" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_from_pretrain_loads_every_backbone_tensor(pretrained, tmp_path, capsys):
    run_dir = tmp_path / "ft"
    argv = ["finetune", "--from", str(pretrained), "--run-dir", str(run_dir), *FINETUNE_FAST]
    assert main([*argv, "trainer.max_epochs=2", "finetune.freeze_backbone=true", "task.ema_decay=null"]) == 0
    pre = load_file(str(pretrained / "model.safetensors"))
    backbone = {k: v for k, v in pre.items() if k.startswith("backbone.")}
    assert f"loaded all {len(backbone)} backbone tensors" in capsys.readouterr().out
    tuned = load_file(str(run_dir / "model.safetensors"))
    assert not any(k.startswith("noise_head.") for k in tuned)  # the head is dropped
    for name, tensor in backbone.items():  # frozen: the finetuned backbone is the pretrained one
        torch.testing.assert_close(tuned[name], tensor, rtol=0, atol=0)
    metadata = read_metadata(run_dir / "model.safetensors")
    assert metadata["data"]["pretrained_from"]["stage"] == "pretrain"
    assert metadata["data"]["pretrained_from"]["tensors_loaded"] == len(backbone)
    assert metadata["backbone"]["hyperparameters"]["hidden_channels"] == 32  # inherited, not the default
    assert metadata["energy_references_eV"]  # refitted on the finetune data


@pytest.mark.slow
def test_finetune_starts_from_the_pretrained_weights(pretrained, tmp_path):
    """Unfrozen, a short finetune moves the backbone only a little away from the pretrained weights,
    far less than the distance between pretrained and freshly initialised weights."""
    run_dir = tmp_path / "ft"
    argv = ["finetune", "--from", str(pretrained), "--run-dir", str(run_dir), *FINETUNE_FAST]
    assert main([*argv, "trainer.max_steps=3", "task.lr=1e-4", "task.ema_decay=null"]) == 0
    pre = load_file(str(pretrained / "model.safetensors"))
    tuned = load_file(str(run_dir / "model.safetensors"))
    fresh = Potential.build(
        "schnet", read_metadata(pretrained / "model.safetensors")["backbone"]["hyperparameters"]
    )
    fresh = {f"backbone.{k}": v for k, v in fresh.backbone.state_dict().items()}
    name = "backbone.interactions.0.filter_net.0.weight"
    moved = (tuned[name] - pre[name]).norm()
    assert 0 < moved < 0.05 * (fresh[name] - pre[name]).norm()


class _ValidationAtTrainStart(lightning.Callback):
    """Evaluates the model Lightning is about to train, on the validation split, at its first step."""

    def on_train_start(self, trainer, pl_module):
        self.errors, _ = evaluate_structures(pl_module.potential, trainer.datamodule.splits["val"], 8)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["run directory", "zoo"])
def test_validation_before_finetuning_is_the_warm_started_model(pretrained, tmp_path, monkeypatch, source):
    """The recorded step-0 errors are those of the model the first optimizer step starts from, for a
    run directory and for the same model shipped in a zoo (``zoo:NAME``)."""
    if source == "zoo":
        from dens_lightning.zoo import add_entry

        monkeypatch.setenv("DENS_LIGHTNING_ZOO", str(tmp_path / "zoo"))
        add_entry("pre", pretrained / "model.safetensors", "rebuild")
    start = "zoo:pre" if source == "zoo" else pretrained
    run_dir = tmp_path / "ft"
    overrides = [arg for arg in FINETUNE_FAST if arg != "--no-progress"]
    overrides += ["trainer.max_epochs=1", "data.eval_batch_size=3"]
    cfg = finetune_config(start, overrides=overrides)
    probe = _ValidationAtTrainStart()
    run_finetune(cfg, run_dir, from_path=start, progress=False, callbacks=[probe])
    recorded = read_warm_start(run_dir)["validation_before_finetuning"]
    assert recorded["n_structures"] == probe.errors["n_structures"] > 0
    for key in ("energy_mae_meV", "forces_mae_meV_per_A", "forces_rmse_meV_per_A"):
        assert recorded[key] == pytest.approx(probe.errors[key], rel=1e-5), key
    origin = read_metadata(run_dir / "model.safetensors")["data"]["pretrained_from"]
    assert origin["validation_before_finetuning"] == recorded
    card = (run_dir / "README.md").read_text()
    assert "validation errors before finetuning" in card
    if source == "zoo":  # named as the user named it, with the file it resolved to
        assert origin["zoo"] == "zoo:pre" and "`zoo:pre`" in card
        assert origin["path"].endswith("pre.safetensors")


class _PredictionsAtTrainStart(lightning.Callback):
    """The energies, reference energies and forces of the model Lightning is about to train, on the
    first validation batch."""

    def on_train_start(self, trainer, pl_module):
        potential = pl_module.potential
        graph = next(iter(structure_loader(potential, trainer.datamodule.splits["val"], 4)))
        out = potential(graph, create_graph=False)
        shift = potential.energy_head.shift.index_select(0, graph.z).double()  # summed in float64
        references = torch.zeros_like(out["energy"]).index_add(0, graph.batch, shift)
        self.energy, self.references, self.forces = out["energy"].detach(), references, out["forces"]


@pytest.mark.slow
@pytest.mark.parametrize("head_init", ["zero", "random"])
def test_a_new_energy_head_on_a_pretrained_backbone_starts_at_the_references(pretrained, tmp_path, head_init):
    """finetune.head_init=zero: a denoising-pretrained backbone's new energy head predicts the
    reference energies and zero forces before the first step, and still learns; random: it does not."""
    run_dir = tmp_path / "ft"
    overrides = [arg for arg in FINETUNE_FAST if arg != "--no-progress"]
    overrides += ["trainer.max_epochs=1", f"finetune.head_init={head_init}"]
    probe = _PredictionsAtTrainStart()
    run_finetune(
        finetune_config(pretrained, overrides=overrides),
        run_dir,
        from_path=pretrained,
        progress=False,
        callbacks=[probe],
    )
    at_references = torch.allclose(probe.energy, probe.references) and not probe.forces.abs().max()
    assert at_references == (head_init == "zero")
    assert read_warm_start(run_dir)["head_init"] == head_init
    output = load_file(run_dir / "model.safetensors")["energy_head.mlp.2.weight"]
    assert output.abs().max() > 0  # the zeroed layer trained


@pytest.mark.slow
def test_a_resumed_warm_start_keeps_its_origin(pretrained, tmp_path):
    run_dir = tmp_path / "ft"
    argv = ["finetune", "--run-dir", str(run_dir), *FINETUNE_FAST]
    assert main([*argv, "--from", str(pretrained), "trainer.max_epochs=1"]) == 0
    first = read_metadata(run_dir / "model.safetensors")["data"]["pretrained_from"]
    assert main([*argv, "--resume", "trainer.max_epochs=2"]) == 0
    resumed = read_metadata(run_dir / "model.safetensors")["data"]["pretrained_from"]
    assert resumed == first and resumed["path"] == str(pretrained / "model.safetensors")
    assert "random initialisation" not in (run_dir / "README.md").read_text()


@pytest.mark.slow
def test_finetune_from_a_pretrain_checkpoint(pretrained, tmp_path, capsys):
    ckpt = pretrained / "checkpoints" / "best.ckpt"
    argv = ["finetune", "--from", str(ckpt), "--run-dir", str(tmp_path / "ft"), *FINETUNE_FAST]
    assert main([*argv, "trainer.max_epochs=1"]) == 0
    assert "loaded all" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hidden_channels=64", "model.hidden_channels=64 but the backbone"),
        ("model.cutoff=4.0", "model.cutoff=4.0 but"),
        ("model.name=painn", "model.name='painn' but"),
    ],
)
def test_finetune_refuses_a_different_architecture(pretrained, tmp_path, capsys, override, message):
    argv = ["finetune", "--from", str(pretrained), "--run-dir", str(tmp_path / "ft"), *FINETUNE_FAST]
    assert main([*argv, override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_finetune_may_add_the_zbl_repulsion_to_a_pretrained_backbone(pretrained):
    overrides = [*FINETUNE_FAST[1:], "model.zbl=true", "model.zbl_switch=0.75"]
    cfg = finetune_config(pretrained, overrides=overrides)
    assert cfg.model.zbl is True and cfg.model.zbl_switch == 0.75


@pytest.mark.slow
def test_run_finetune_refuses_another_architecture_before_making_the_run(pretrained, tmp_path):
    """A config changed after it was made (as a Python caller may) is checked by the runner too."""
    cfg = finetune_config(pretrained, overrides=FINETUNE_FAST[1:])
    cfg.model.cutoff = 4.0
    with pytest.raises(InputError, match="model.cutoff=4.0 but the backbone"):
        run_finetune(cfg, tmp_path / "ft", from_path=pretrained, progress=False)
    assert not (tmp_path / "ft").exists()


@pytest.mark.slow
def test_new_elements_are_allowed_with_a_warning(pretrained, tmp_path):
    pre = read_metadata(pretrained / "model.safetensors")
    new = "FC(F)(F)C(=O)O" if 9 not in pre["elements"] else "ClCC(Cl)Cl"
    argv = ["finetune", "--from", str(pretrained), "--run-dir", str(tmp_path / "ft"), *FINETUNE_FAST]
    with pytest.warns(UserWarning, match="not in the pretraining data"):
        assert main([*argv, f"data.embedded.smiles=[{new}]", "trainer.max_epochs=1"]) == 0


@pytest.mark.slow
def test_pretrain_resumes_and_reads_labelled_files(tmp_path, trained_file):
    run_dir = tmp_path / "pre"
    argv = ["pretrain", "--run-dir", str(run_dir), *TINY_PRETRAIN, f"data.path={trained_file}"]
    assert main([*argv, "trainer.max_epochs=1"]) == 0
    assert (
        main(["pretrain", "--run-dir", str(run_dir), "--resume", "--no-progress", "trainer.max_epochs=2"])
        == 0
    )
    assert len(val_column(run_dir, "val/loss")) == 2
    assert read_metadata(run_dir / "model.safetensors")["data"]["files"]["train"]["path"] == str(trained_file)


@pytest.fixture
def trained_file(tmp_path):
    """A labelled extxyz file (its labels are ignored by pretraining)."""
    from dens_lightning.data.embedded import embedded_dataset
    from dens_lightning.data.sampling import BUNDLED

    spec = {
        "smiles": [],
        "smiles_file": BUNDLED,
        "limit": 5,
        "conformers": 1,
        "samples": 8,
        "method": "md",
        "temperature": 300.0,
        "displacement": 0.05,
        "labeller": "mmff",
        "seed": 0,
    }
    return embedded_dataset(spec)


# ------------------------------------------------------------------ another backbone is refused


@dataclass
class ToyConfig(BackboneConfig):
    width: int = 4


class Toy(Backbone):
    """A minimal invariant backbone used only to test that a foreign backbone is refused."""

    name = "toy_for_tests"
    Config = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embedding = torch.nn.Embedding(config.max_z + 1, config.width)

    @property
    def num_features(self):
        return self.config.width

    def forward(self, graph, node_inputs=None):
        return Features(scalars=self.embedding(graph.z))


def test_a_model_of_another_backbone_is_refused(tmp_path, capsys):
    register_backbone(Toy)
    try:
        potential = Potential.build("toy_for_tests", {})
        path = save_model(
            potential, tmp_path / "toy.safetensors", model_metadata(potential, stage="finetune")
        )
        argv = ["finetune", "--from", str(path), "--run-dir", str(tmp_path / "ft"), "model.name=schnet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "model.name='schnet'" in err and "'toy_for_tests' backbone" in err
        assert len(err.splitlines()) == 1
    finally:
        BACKBONES.pop("toy_for_tests")


def test_metadata_of_pretrain_file_is_readable_by_info(tmp_path, capsys):
    from dens_lightning.artifacts import pretrain_metadata

    task = DenoisingPretraining("schnet", dict(SMALL), {"lr": 1e-3, "noise": {"sigma": 0.1}})
    path = save_model(task, tmp_path / "m.safetensors", pretrain_metadata(task.backbone, elements=[1, 6]))
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "pretrain"


@pytest.mark.parametrize("freeze, scale", [(False, 0.1), (True, 1.0), (False, 0.0)])
def test_backbone_learning_rate_scale_and_freezing(freeze, scale):
    from dens_lightning.tasks.finetune import EnergyForceTask

    task_cfg = {"lr": 1e-3, "weight_decay": 0.0, "scheduler": "none", "warmup_steps": 0, "ema_decay": None}
    task = EnergyForceTask(
        "schnet", dict(SMALL), task_cfg, finetune={"freeze_backbone": freeze, "backbone_lr_scale": scale}
    )
    optimizer = task.configure_optimizers()["optimizer"]
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    backbone = list(task.potential.backbone.parameters())
    if freeze or scale == 0:
        assert "backbone" not in lrs and not any(id(p) in in_optimizer for p in backbone)
        assert all(not p.requires_grad for p in backbone) == freeze
    else:
        assert lrs["backbone"] == pytest.approx(scale * 1e-3)
    assert lrs["heads"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("schnet", SMALL),
        ("painn", {"hidden_channels": 8, "num_interactions": 3, "num_rbf": 6}),
        ("equiformer", {"num_channels": 8, "num_layers": 2, "lmax": 1, "num_heads": 2, "num_rbf": 6}),
    ],
)
def test_freeze_named_parts(name, hparams):
    """``finetune.freeze`` takes the named parts out of training and leaves every other one in."""
    from dens_lightning.tasks.finetune import EnergyForceTask

    task_cfg = {"lr": 1e-3, "weight_decay": 0.0, "scheduler": "none", "warmup_steps": 0, "ema_decay": None}
    finetune = {"freeze_backbone": False, "backbone_lr_scale": 1.0, "freeze": ["embedding", "block0"]}
    task = EnergyForceTask(name, dict(hparams), task_cfg, finetune=finetune)
    parts = task.potential.backbone.parts()
    assert list(parts)[:3] == ["embedding", "block0", "block1"]
    frozen = {id(p) for part in ("embedding", "block0") for p in parts[part].parameters()}
    in_optimizer = {id(p) for g in task.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert frozen and not frozen & in_optimizer
    others = [p for p in task.potential.parameters() if id(p) not in frozen]
    assert others and all(p.requires_grad and id(p) in in_optimizer for p in others)
    with pytest.raises(InputError, match="finetune.freeze: 'block9' is not a part of"):
        EnergyForceTask(name, dict(hparams), task_cfg, finetune={**finetune, "freeze": ["block9"]})
