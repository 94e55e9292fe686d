"""Multi-process training: exact means across ranks, samplers, the rank consistency check, and
pretrain / finetune / DeNS on 2 CPU processes (gloo) against 1 process of twice the batch."""

import csv
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from dens_lightning.config import load_config
from dens_lightning.data.datamodule import AtomsDataModule
from dens_lightning.data.loading import ShardSampler
from dens_lightning.data.sampling import sample_to_file
from dens_lightning.files import exclusive, replacing, write_text_atomic
from dens_lightning.tasks.reduction import MeanAccumulator, combine, masked_sum
from dens_lightning.training.consistency import disagreement
from tests.conftest import TINY_EMBEDDED, TINY_MODEL

# ------------------------------------------------------------------ exact means across ranks


class FakeRanks:
    """Stands in for a trainer of ``W`` ranks: ``reduce`` adds what every rank contributes."""

    def __init__(self, contributions):
        self.contributions = contributions  # what each rank passes to reduce, in rank order
        self.world_size = len(contributions)
        self.strategy = self

    def reduce(self, tensor, reduce_op):
        assert reduce_op == "sum"
        return sum(self.contributions)


def test_two_ranks_train_with_the_gradient_of_the_whole_batch():
    """Ranks holding different numbers of atoms: the average of the ranks' gradients (what DDP
    applies) is the gradient of the mean over all atoms, not the mean of the ranks' means."""
    torch.manual_seed(0)
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    data = [torch.randn(n, 3, dtype=torch.float64) for n in (2, 7)]  # atoms on rank 0 and rank 1

    def terms(x):
        return {"forces_loss": masked_sum((x * weight).pow(2)), "cosine": masked_sum(x[:, 0])}

    whole = torch.cat(data)
    expected = torch.autograd.grad((whole * weight).pow(2).mean(), weight)[0]
    local = [terms(x) for x in data]
    stacked = [torch.stack([t[k].total.detach() for k in t] + [t[k].count for k in t]) for t in local]
    grads, logged = [], []
    for rank in range(2):
        module = SimpleNamespace(_trainer=FakeRanks(stacked))
        loss, log = combine(module, local[rank], {"forces_loss": 1.0})
        grads.append(torch.autograd.grad(loss, weight, retain_graph=True)[0])
        logged.append(log)
    torch.testing.assert_close((grads[0] + grads[1]) / 2, expected)
    naive = sum(torch.autograd.grad((x * weight).pow(2).mean(), weight)[0] for x in data) / 2
    assert not torch.allclose(naive, expected)  # what dividing by each rank's own count would do
    for log in logged:
        torch.testing.assert_close(log["loss"], (whole * weight).pow(2).mean().detach())
        torch.testing.assert_close(log["cosine"], whole[:, 0].mean())


def test_one_process_combine_is_the_plain_weighted_mean():
    values = torch.randn(5, 3, requires_grad=True)
    mask = torch.tensor([True, False, True, True, False])
    loss, logged = combine(
        SimpleNamespace(_trainer=None),
        {"a": masked_sum(values.pow(2), mask), "b": masked_sum(values[:, 0])},
        {"a": 2.0, "b": 0.5},
    )
    expected = 2.0 * values[mask].pow(2).mean() + 0.5 * values[:, 0].mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logged["loss"], expected.detach())


def test_evaluation_means_do_not_depend_on_batches_or_ranks():
    values = torch.randn(23, 3, dtype=torch.float64)
    whole = MeanAccumulator(("x",))
    whole.update({"x": masked_sum(values)})
    split = MeanAccumulator(("x",))
    for chunk in torch.split(values, 4):  # uneven batches, as a rank's share would come
        split.update({"x": masked_sum(chunk)})
    assert split.compute()["x"] == pytest.approx(whole.compute()["x"], rel=1e-14)
    assert whole.compute()["x"] == pytest.approx(float(values.mean()), rel=1e-14)


# ------------------------------------------------------------------ samplers and sharding


def test_shard_sampler_deals_every_structure_once_without_padding():
    for size in (0, 1, 7, 10):
        shards = [list(ShardSampler(range(size), num_replicas=3, rank=r)) for r in range(3)]
        assert sorted(i for shard in shards for i in shard) == list(range(size))
        assert [len(s) for s in shards] == [len(ShardSampler(range(size), 3, r)) for r in range(3)]


TINY_PRETRAIN = [*TINY_EMBEDDED, "data.embedded.smiles_file=null"]


def datamodule(tmp_path, world: int, rank: int, stage="finetune", batch=4, **data):
    data_args = TINY_PRETRAIN if stage == "pretrain" else TINY_EMBEDDED
    cfg = load_config(stage, None, [*data_args, f"data.batch_size={batch}"])
    for key, value in data.items():
        OmegaConf.update(cfg, f"data.{key}", value)
    module = AtomsDataModule(
        cfg.data,
        cutoff=5.0,
        seed=cfg.seed,
        run_dir=tmp_path,
        require_energy=stage != "pretrain",
        require_forces=stage != "pretrain",
        lazy_default=stage == "pretrain",
        fit_statistics=stage != "pretrain",
        is_global_zero=rank == 0,
    )
    module.trainer = SimpleNamespace(
        world_size=world, global_rank=rank, fit_loop=SimpleNamespace(restarting=False)
    )
    module.prepare_data()
    module.setup("fit")
    return module


def indices(loader) -> list[list[int]]:
    return [batch.idx.tolist() for batch in loader]


def test_ranks_together_see_the_batches_of_one_process_of_the_whole_batch(tmp_path):
    """Rank r of W with batch B, step k: together the ranks hold exactly what one process of batch
    W·B holds at step k, in every epoch; evaluation sets are dealt out whole."""
    one = datamodule(tmp_path / "one", 1, 0, batch=8)
    ranks = [datamodule(tmp_path / f"r{r}", 2, r, batch=4) for r in (0, 1)]
    for epoch in (0, 1):
        for module in (one, *ranks):
            loader = module.train_dataloader()
            loader.sampler.set_epoch(epoch)
            module.order = indices(loader)
        assert len(ranks[0].order) == len(one.order)
        for k, batch in enumerate(one.order):
            assert sorted(ranks[0].order[k] + ranks[1].order[k]) == sorted(batch)
    assert one.order != indices(one.train_dataloader())  # the default epoch 0 differs from epoch 1
    val = [i for module in ranks for batch in indices(module.val_dataloader()) for i in batch]
    assert sorted(val) == list(range(len(one.splits["val"])))
    assert ranks[0].fingerprint() == ranks[1].fingerprint() == one.fingerprint()


def test_each_rank_reads_only_its_share_of_a_memory_mapped_store(tmp_path, monkeypatch):
    """The pretraining store is memory-mapped; a rank's loader asks it for its own structures only."""
    modules = [datamodule(tmp_path / f"r{r}", 2, r, stage="pretrain") for r in (0, 1)]
    base = modules[0].splits["train"].base
    assert isinstance(base.pos, np.memmap)
    reads = {0: set(), 1: set()}
    for rank, module in enumerate(modules):
        store = module.splits["train"].base
        original = type(store).graph

        def recording(self, i, dtype=torch.float32, rank=rank, original=original):
            reads[rank].add(int(i))
            return original(self, i, dtype)

        monkeypatch.setattr(type(store), "graph", recording)
        list(module.train_dataloader())
        monkeypatch.undo()
    train = set(modules[0].splits["train"].indices.tolist())
    assert reads[0] | reads[1] == train
    assert abs(len(reads[0]) - len(reads[1])) <= 1 and len(reads[0] & reads[1]) <= 1  # padding


def make_once(path: str, log: str) -> None:
    """What every rank does for a cached data set: under the lock, make it unless it is there."""
    with exclusive(path):
        if not os.path.exists(path):
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.3)  # long enough for the other process to arrive while this one works
            Path(path).write_text("made")


def test_processes_asking_at_once_make_a_cached_file_once(tmp_path):
    target, log = tmp_path / "data", tmp_path / "makers.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=make_once, args=(str(target), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().split()) == 1  # without the lock both find it missing and make it


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "splits.json", "old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_rank_disagreements_are_named():
    zero = {"fingerprint": "abc", "references": {1: -13.6, 6: -1030.0}, "scale": 1.5}
    assert disagreement(dict(zero), zero) is None
    assert disagreement({**zero, "scale": 1.5 * (1 + 1e-12)}, zero) is None  # round-off is fine
    assert "split" in disagreement({**zero, "fingerprint": "abd"}, zero)
    assert "elements" in disagreement({**zero, "references": {1: -13.6}}, zero)
    assert "statistics" in disagreement({**zero, "references": {1: -13.6, 6: -1031.0}}, zero)


# ------------------------------------------------------------------ 2 processes through the CLI
#
# Both arms run as subprocesses with one thread each, in float64, with a fixed seed: data, draws
# and initialisation are the same, and W·B structures of a step are the same structures in both
# arms. What may differ is only the order of floating-point additions (two half-batch sums added by
# the all-reduce, against one sum), ~1e-16 relative per operation. Measured over these 8 Adam steps:
# 3e-15 relative in the weights, 1e-15 in the logged losses; the 1e-9 tolerance leaves a margin of
# 10^6. A wrong reduction moves the numbers far more: each rank dividing by its own atom count
# (the molecules here have 8 and 9 atoms) shifted the validation loss by 9e-5 and the weights by 8e-2.

TOLERANCE = 1e-9
COMMON = [
    "--no-progress",
    *TINY_EMBEDDED,
    *TINY_MODEL,
    "seed=7",
    "trainer.precision=64",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "task.warmup_steps=2",
    "task.ema_decay=null",
    "data.eval_batch_size=2",
]
SPLIT = ["data.split=[32,7,9]"]  # 48 structures of two sizes; odd evaluation sets (no padding)


def cli(*argv, processes=1, launcher="lightning", timeout=300, **env):
    """Run the CLI in fresh processes (one thread each); ``launcher="torchrun"`` starts every rank at
    once, as ``torchrun`` or ``srun`` do, instead of Lightning starting the others."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    devices = [f"trainer.devices={processes}"] if argv[0] in ("pretrain", "finetune") else []
    if processes > 1:
        devices.append("trainer.strategy=ddp")
    if launcher == "torchrun":
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
        ]
        command += ["-m", "dens_lightning", *argv, *devices]
    else:
        command = [sys.executable, "-m", "dens_lightning", *argv, *devices]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def history(run_dir) -> dict[str, list[float]]:
    """Every numeric column of ``metrics.csv`` as the list of its logged values, in order."""
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = {key for row in rows for key, value in row.items() if value and not key.startswith("lr-")}
    return {key: [float(r[key]) for r in rows if r.get(key)] for key in sorted(columns - {"epoch", "step"})}


def assert_same_run(a, b, columns):
    ha, hb = history(a), history(b)
    for column in columns:
        assert len(ha[column]) == len(hb[column]) > 0, column
        np.testing.assert_allclose(ha[column], hb[column], rtol=TOLERANCE, atol=1e-12, err_msg=column)
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=TOLERANCE, atol=1e-12, msg=key)


@pytest.mark.slow
def test_finetune_two_processes_of_batch_b_equal_one_of_2b_and_test_metrics_match(tmp_path):
    two, one, half = tmp_path / "two", tmp_path / "one", tmp_path / "half"
    cli("finetune", "--run-dir", str(two), *COMMON, *SPLIT, "data.batch_size=4", processes=2)
    cli("finetune", "--run-dir", str(one), *COMMON, *SPLIT, "data.batch_size=8")
    columns = ["train/loss_step", "train/forces_loss_step", "val/loss", "val/forces_mae_meV_per_A"]
    assert len(history(two)["train/loss_step"]) == 8 and len(history(two)["val/loss"]) == 2
    assert_same_run(two, one, columns + ["val/energy_mae_meV", "test/energy_mae_meV"])
    # the reference: one process of batch B takes other steps, and the numbers move well apart
    cli("finetune", "--run-dir", str(half), *COMMON, *SPLIT, "data.batch_size=4", "trainer.max_steps=8")
    assert abs(history(half)["val/loss"][0] / history(one)["val/loss"][0] - 1) > 1e-3

    # the 2-process test metrics (each rank half the test set) equal one process testing the same model
    metrics = json.loads((two / "test_metrics.json").read_text())
    split = json.loads((two / "splits.json").read_text())
    frames = ase.io.read(split["source"], index=":")
    test_file = tmp_path / "test.extxyz"
    ase.io.write(test_file, [frames[i] for i in split["indices"]["test"]], format="extxyz")
    alone = json.loads(cli("test", "--model", str(two), "--data", str(test_file)).stdout)
    assert metrics["n_structures"] == alone["n_structures"] == 9
    for key, value in alone.items():
        assert metrics[key] == pytest.approx(value, rel=TOLERANCE), key


@pytest.mark.slow
def test_dens_finetune_two_processes_equal_one(tmp_path):
    dens = ["task.dens.enabled=true", "task.dens.probability=0.5", "task.dens.corrupt_ratio=0.5"]
    two, one = tmp_path / "two", tmp_path / "one"
    cli("finetune", "--run-dir", str(two), *COMMON, *SPLIT, *dens, "data.batch_size=4", processes=2)
    cli("finetune", "--run-dir", str(one), *COMMON, *SPLIT, *dens, "data.batch_size=8")
    fraction = history(two)["train/corrupted_fraction_step"]
    assert min(fraction) > 0 and max(fraction) < 1  # some atoms corrupted at every step, not all
    columns = ["train/loss_step", "train/noise_loss_step", "train/corrupted_fraction_step", "val/loss"]
    assert_same_run(two, one, columns)


@pytest.mark.slow
def test_replay_beside_dens_two_processes_equal_one(tmp_path):
    """Replay batches beside DeNS (energy head, noise head, force encoder and the replay terms all in
    the graph of every step): 2 processes of batch B and replay batch R train like 1 of 2B and 2R."""
    other = tmp_path / "other_molecules.extxyz"
    sample_to_file(other, smiles=["CCCO", "c1ccncc1"], num=6, label="mmff", seed=3, workers=1)
    common = [*COMMON, *SPLIT, "task.dens.enabled=true", "task.dens.probability=0.5"]
    common += ["finetune.replay.weight=0.5", f"finetune.replay.data={other}"]
    two, one = tmp_path / "two", tmp_path / "one"
    cli(
        "finetune",
        "--run-dir",
        str(two),
        *common,
        "data.batch_size=4",
        "finetune.replay.batch_size=3",
        processes=2,
    )
    cli("finetune", "--run-dir", str(one), *common, "data.batch_size=8", "finetune.replay.batch_size=6")
    columns = ["train/loss_step", "train/noise_loss_step", "train/replay_energy_loss_step"]
    assert_same_run(two, one, [*columns, "train/replay_forces_loss_step", "val/loss"])


@pytest.mark.slow
def test_pretrain_two_processes_equal_one_then_finetune_from_it(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    pre = ["pretrain", *COMMON, "data.embedded.smiles_file=null", "data.split=[40,8]"]
    pre.append("task.noise.atom_fraction=0.5")
    cli(*pre, "--run-dir", str(two), "data.batch_size=4", processes=2)
    cli(*pre, "--run-dir", str(one), "data.batch_size=8")
    assert_same_run(two, one, ["train/loss_step", "train/cosine_step", "val/loss", "val/cosine"])
    tuned = tmp_path / "tuned"
    cli("finetune", "--from", str(two), "--run-dir", str(tuned), *COMMON, "data.batch_size=4", processes=2)
    assert (tuned / "model.safetensors").exists()


@pytest.mark.slow
def test_torchrun_starts_every_rank_at_once_and_they_share_one_data_cache(tmp_path):
    """All ranks start together (as under torchrun or srun), both on an empty data cache: the run
    completes with one data set in the cache (generating it once is the lock's test above), one
    rank printing, and nothing half-written."""
    cache, run = tmp_path / "cache", tmp_path / "run"  # an empty cache: both ranks find no data
    argv = ["finetune", "--run-dir", str(run), *COMMON, "data.batch_size=4"]
    done = cli(*argv, processes=2, launcher="torchrun", DENS_LIGHTNING_CACHE=str(cache))
    assert (run / "model.safetensors").exists() and (run / "test_metrics.json").exists()
    assert done.stdout.count("model: ") == 1  # rank 1 prints nothing
    assert len([p for p in cache.iterdir() if not p.name.endswith(".lock")]) == 1
    assert not list(run.glob(".*tmp*")) and not list(cache.glob(".*tmp*"))  # nothing half-written


def test_fsdp_is_refused_with_the_reason():
    """Lightning runs FSDP on GPUs only, so this checks the refusal, not an FSDP run."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from dens_lightning.errors import InputError
    from dens_lightning.training.trainer import check_strategy

    with pytest.raises(InputError, match="differentiates the model twice.*trainer.strategy=ddp"):
        check_strategy(FSDPStrategy())
    check_strategy(DDPStrategy())


# a run that diverges at once: after the first AdamW step of size ~lr every loss is NaN
DIVERGING = [*COMMON, "trainer.precision=32-true", "data.batch_size=4", "task.lr=1e30", "task.warmup_steps=0"]


@pytest.mark.slow
def test_nonfinite_losses_under_ddp_stop_every_rank_or_are_skipped_together(tmp_path):
    """Both ranks see the same (global) loss: with ``stop`` every rank ends with the one-line error
    (exit 3, no hang); with ``skip`` the run finishes and counts the skipped batches."""
    command = [sys.executable, "-m", "dens_lightning", "finetune", "--run-dir", str(tmp_path / "stop")]
    command += [*DIVERGING, "trainer.devices=2", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: non-finite loss")]
    assert len(errors) == 2 and all("at step 1, batch 1 of epoch 0" in line for line in errors)

    cli("finetune", "--run-dir", str(tmp_path / "skip"), *DIVERGING, "task.nonfinite_loss=skip", processes=2)
    skipped = history(tmp_path / "skip")["train/skipped_batches"]
    assert skipped[-1] >= 3 and skipped == sorted(skipped)


@pytest.mark.slow
def test_sigterm_to_every_rank_writes_one_checkpoint_and_the_run_resumes(tmp_path):
    """SLURM signals every task of a job step: last.ckpt is written once (by rank 0) at the step the
    run reached, the run exits 143 naming it, and --resume finishes the run."""
    run_dir = tmp_path / "run"
    argv = ["finetune", "--run-dir", str(run_dir), *COMMON, "trainer.max_epochs=100"]
    argv += ["trainer.devices=2", "trainer.strategy=ddp", "checkpoint.every_n_steps=null"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dens_lightning", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    while not (run_dir / "metrics.csv").exists():  # an epoch has ended (loggers flush with checkpoints)
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    # rank 0's line (rank 1 prints the same, unless the signal caught it in a collective with rank 0
    # during validation: then it ends with the connection error)
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted: ")]
    assert lines and "checkpoints/last.ckpt written" in lines[0], stderr[-4000:]
    step = int(lines[0].split("after step ")[1].split(",")[0])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == step
    epoch = checkpoint["epoch"]
    more = f"trainer.max_epochs={epoch + 2}"
    cli("finetune", "--run-dir", str(run_dir), "--resume", "--no-progress", more, processes=2)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == epoch + 1


@pytest.mark.slow
def test_sigkill_of_every_rank_mid_epoch_then_resume_gives_the_uninterrupted_run(tmp_path):
    """Both ranks killed at once (SIGKILL) after a mid-epoch checkpoint, then resumed on 2 processes:
    the same optimizer steps and the same weights as a 2-process run never interrupted (each rank's
    sampler continues the epoch's order after the batches it had trained on)."""
    from tests.integration.test_interruption import RUN, progress

    ddp = ["trainer.devices=2", "trainer.strategy=ddp", "data.batch_size=2"]  # 10 steps per epoch
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(run_dir, *extra):
        return [sys.executable, "-m", "dens_lightning", "finetune", "--run-dir", str(run_dir), *extra, *ddp]

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(command(whole, *RUN), env=env, check=True, capture_output=True, timeout=300)
    process = subprocess.Popen(
        command(killed, *RUN),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    while not last.exists():
        assert process.poll() is None
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    _, _, batches = progress(last)
    assert 0 < batches < 10
    subprocess.run(
        command(killed, "--resume", "--no-progress"), env=env, check=True, capture_output=True, timeout=300
    )
    assert progress(last)[0] == progress(whole / "checkpoints" / "last.ckpt")[0] == 30
    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-12, msg=key)
