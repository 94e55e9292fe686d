"""The launch recipes in configs/launch: the SLURM job script's commands are valid, and ranks that
SLURM starts (as srun does) train together."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dens_lightning.cli import build_parser
from dens_lightning.config import load_config
from tests.conftest import ROOT, TINY_EMBEDDED, TINY_MODEL

JOB = ROOT / "configs" / "launch" / "slurm_pretrain.sbatch"


def srun_calls(cwd: Path, tmp_path: Path) -> list[list[str]]:
    """Run the job script with a stand-in ``srun`` that records its arguments."""
    log = tmp_path / "srun.log"
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "open(os.environ['SRUN_LOG'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    fake.chmod(0o755)
    slurm = {"SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_CPUS_PER_TASK": "8"}
    env = {**os.environ, **slurm, "SRUN_LOG": str(log), "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(JOB)], cwd=cwd, env=env, check=True, timeout=60)
    return [json.loads(line) for line in log.read_text().splitlines()]


def training_config(call: list[str], cwd: Path):
    """The stage, parsed arguments and resolved config of one recorded ``srun`` call."""
    rest = call[call.index("-m") + 2 :]  # after `python -m dens_lightning`
    args, overrides = build_parser().parse_known_args(rest)
    configs = [str(cwd / c) for c in args.config or []]
    return args.command, args, load_config(args.command, configs or None, overrides)


def test_the_slurm_job_script_pretrains_on_every_node_then_finetunes(tmp_path):
    calls = srun_calls(ROOT, tmp_path)
    assert len(calls) == 2
    stage, args, cfg = training_config(calls[0], ROOT)
    assert stage == "pretrain" and not args.resume
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (2, 4, "ddp")
    stage, args, cfg = training_config(calls[1], ROOT)
    assert stage == "finetune" and str(args.from_path) == "runs/pretrain/slurm-large"
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (1, 4)
    assert cfg.data.path.endswith("rmd17_aspirin_1050.npz")  # the data config was merged too


def test_the_slurm_job_script_resumes_a_run_that_has_a_checkpoint(tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "runs/pretrain/slurm-large/checkpoints").mkdir(parents=True)
    (tmp_path / "runs/pretrain/slurm-large/checkpoints/last.ckpt").write_bytes(b"")
    pretrain, finetune = srun_calls(tmp_path, tmp_path)
    assert "--resume" in pretrain and "--config" not in pretrain  # the run keeps its config.yaml
    assert "--resume" not in finetune and "--config" in finetune


@pytest.mark.slow
def test_ranks_started_by_slurm_train_together(tmp_path):
    """Two processes with the variables srun gives its tasks: Lightning reads the ranks from SLURM,
    starts no process itself, and the run completes with one run directory."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dens_lightning", "finetune", "--run-dir", str(run), "--no-progress"]
    argv += ["--config", str(ROOT / "configs/launch/cpu_ddp.yaml"), *TINY_EMBEDDED, *TINY_MODEL]
    argv += ["data.batch_size=4", "trainer.max_epochs=1", "task.ema_decay=null"]
    job = {
        "SLURM_JOB_ID": str(4000 + os.getpid() % 1000),
        "SLURM_JOB_NAME": "dens-test",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
    }
    tasks = [
        subprocess.Popen(
            argv,
            env={**os.environ, **job, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [task.communicate(timeout=300) for task in tasks]
    for task, (out, err) in zip(tasks, outputs):
        assert task.returncode == 0, out[-2000:] + err[-3000:]
    assert outputs[0][0].count("model: ") == 1 and "model: " not in outputs[1][0]
    assert (run / "model.safetensors").exists() and (run / "test_metrics.json").exists()
