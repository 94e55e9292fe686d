"""Interruption and numerical faults: atomic checkpoints, SIGKILL then --resume, SIGTERM, NaN losses."""

import csv
import os
import signal
import subprocess
import sys
import time

import lightning
import pytest
import torch
from safetensors.torch import load_file

from dens_lightning.artifacts import load_checkpoint
from dens_lightning.cli import main
from dens_lightning.config import load_config
from dens_lightning.data.sampling import sample_to_file
from dens_lightning.errors import NumericalFault
from dens_lightning.runner import run_finetune
from dens_lightning.training.checkpoints import AtomicCheckpointIO
from tests.conftest import TINY_EMBEDDED, TINY_MODEL

# 48 embedded structures: 38 to train on, batch 4, so 10 steps per epoch; checkpoints every 3 steps
# land mid-epoch (3, 6, 9, 13, ...)
RUN = [
    "--no-progress",
    *TINY_EMBEDDED,
    *TINY_MODEL,
    "data.batch_size=4",
    "data.split=[38,5,5]",
    "trainer.precision=64",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "task.warmup_steps=2",
    "task.ema_decay=0.9",
    "checkpoint.every_n_steps=3",
]
STEPS_PER_EPOCH = 10


def progress(path) -> tuple[int, int, int]:
    """(global step, epoch, batches done in that epoch) of a checkpoint."""
    checkpoint = load_checkpoint(path)
    batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    return checkpoint["global_step"], checkpoint["epoch"], batches


def epochs_validated(run_dir) -> list[int]:
    with open(run_dir / "metrics.csv") as handle:
        return [int(r["epoch"]) for r in csv.DictReader(handle) if r.get("val/loss")]


def default_sigint() -> None:
    """Ctrl-C as in a terminal: a shell starts background jobs (CI under ``nohup ... &``) with SIGINT
    ignored, the child inherits that, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(run_dir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "dens_lightning", "finetune", "--run-dir", str(run_dir), *RUN, *extra]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )


def wait_for(path, process, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous checkpoint whole and no temporary file."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def failing(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(10)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
@pytest.mark.parametrize("replay", [False, True], ids=["plain", "replay"])
def test_sigkill_mid_epoch_then_resume_trains_like_an_uninterrupted_run(tmp_path, replay):
    """Killed with SIGKILL after a mid-epoch checkpoint, then resumed (from Python, as a notebook
    would, with the run's own config): the same number of optimizer
    steps, every epoch validated once, and the same weights as a run that was never interrupted (the
    optimizer, scheduler, EMA and the epoch's data order all continue where the checkpoint left them;
    with replay, its batches and its energy offsets too)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    extra = []
    if replay:
        other = tmp_path / "other_molecules.extxyz"
        sample_to_file(other, smiles=["CCCO", "c1ccncc1"], num=6, label="mmff", seed=3, workers=1)
        extra = [
            "finetune.replay.weight=0.5",
            f"finetune.replay.data={other}",
            "finetune.replay.batch_size=3",
        ]
    assert main(["finetune", "--run-dir", str(whole), *RUN, *extra]) == 0

    process = start(killed, *extra)
    last = killed / "checkpoints" / "last.ckpt"
    wait_for(last, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    step, epoch, batches = progress(last)
    assert 0 < batches < STEPS_PER_EPOCH, (step, epoch, batches)  # the run was cut mid-epoch

    run_finetune(None, killed, resume=True, progress=False)  # from Python: the run's own config
    steps = [progress(run / "checkpoints" / "last.ckpt")[0] for run in (whole, killed)]
    assert steps == [3 * STEPS_PER_EPOCH] * 2
    assert epochs_validated(killed) == epochs_validated(whole) == [0, 1, 2]
    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_with_how_to_resume(tmp_path):
    """SIGTERM (SLURM's warning before a job ends) mid-run: a fresh last.ckpt of the step reached, a
    one-line message that says how to continue, exit status 143; --resume then finishes the run."""
    run_dir = tmp_path / "run"
    process = start(run_dir, "checkpoint.every_n_steps=null", "trainer.max_epochs=50")
    metrics = run_dir / "metrics.csv"
    wait_for(metrics, process)  # an epoch has ended (the loggers are flushed with each checkpoint)
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.stat().st_mtime >= signalled
    step, epoch, _ = progress(last)
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("interrupted: ") and "SIGTERM" in message
    assert f"after step {step}" in message and "--resume" in message and str(last) in message
    more = f"trainer.max_epochs={epoch + 2}"
    assert main(["finetune", "--run-dir", str(run_dir), "--resume", "--no-progress", more]) == 0
    assert progress(last)[:2] == ((epoch + 2) * STEPS_PER_EPOCH, epoch + 1)  # epochs count from 0


@pytest.mark.slow
def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir, "checkpoint.every_n_steps=null", "trainer.max_epochs=50")
    wait_for(run_dir / "metrics.csv", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    step, epoch, _ = progress(run_dir / "checkpoints" / "last.ckpt")
    assert message.startswith("interrupted: ") and f"stopped by Ctrl-C after step {step}," in message
    more = f"trainer.max_epochs={epoch + 2}"
    assert main(["finetune", "--run-dir", str(run_dir), "--resume", "--no-progress", more]) == 0


class PoisonBatch(lightning.Callback):
    """Puts a NaN into one training batch's energy label (the data are checked on reading, so a NaN
    can only come from the numbers themselves: this stands in for a diverging step)."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            batch.energy[0] = float("nan")


def nonfinite_config(*overrides):
    args = [a for a in RUN if a != "--no-progress"]
    return load_config("finetune", overrides=[*args, "trainer.max_epochs=1", *overrides])


def test_a_nonfinite_loss_stops_the_run_naming_step_batch_and_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(NumericalFault) as caught:
        run_finetune(nonfinite_config(), run_dir, progress=False, callbacks=[PoisonBatch(4)])
    message = str(caught.value)
    assert "non-finite loss" in message and "at step 4, batch 4 of epoch 0" in message
    assert "training-split structures [" in message
    assert f"last checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}" in message  # written at step 3
    assert progress(run_dir / "checkpoints" / "last.ckpt")[0] == 3  # not overwritten by the fault


def test_the_sigterm_handler_is_the_one_from_before_the_run_afterwards(tmp_path):
    """Training replaces the SIGTERM handler; after a run, one that ended normally and one that
    stopped on an error, the process answers SIGTERM as before (it is not left ignoring it)."""
    before = signal.getsignal(signal.SIGTERM)
    run_finetune(nonfinite_config("checkpoint.every_n_steps=null"), tmp_path / "a", progress=False)
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(NumericalFault):
        run_finetune(nonfinite_config(), tmp_path / "b", progress=False, callbacks=[PoisonBatch(2)])
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_nonfinite_loss_can_be_skipped_and_counted(tmp_path):
    run_dir = tmp_path / "run"
    config = nonfinite_config("task.nonfinite_loss=skip", "checkpoint.every_n_steps=null")
    run_finetune(config, run_dir, progress=False, callbacks=[PoisonBatch(4)])
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["train/skipped_batches"]) for r in rows if r.get("train/skipped_batches")] == [1.0]
    assert all(torch.isfinite(t).all() for t in load_file(run_dir / "model.safetensors").values())
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["skipped_batches"] == 1
    # the EMA averaged every optimizer step, and not the skipped batch
    assert int(checkpoint["averaging_state"]["n_averaged"]) == checkpoint["global_step"] - 1


@pytest.mark.slow
def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    """An epoch whose validation loss is no better still writes last.ckpt (a monitored checkpoint's
    save_last would not), so --resume never goes back to an older epoch."""
    run_dir = tmp_path / "run"
    frozen = ["checkpoint.every_n_steps=null", "task.lr=1e-30"]  # the weights, so the loss, stay put
    assert main(["finetune", "--run-dir", str(run_dir), *RUN, *frozen]) == 0
    with open(run_dir / "metrics.csv") as handle:
        losses = [float(r["val/loss"]) for r in csv.DictReader(handle) if r.get("val/loss")]
    assert len(losses) == 3 and min(losses[1:]) >= losses[0]  # no epoch after the first improved
    assert progress(run_dir / "checkpoints" / "last.ckpt")[:2] == (3 * STEPS_PER_EPOCH, 2)
    assert load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["global_step"] == STEPS_PER_EPOCH
