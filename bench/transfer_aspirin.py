"""Does denoising pretraining help? rMD17 aspirin force errors, finetuned from the pretrained backbone
and from scratch, with the same finetune budget.

    python bench/transfer_aspirin.py [--out runs/transfer_aspirin] [--frames 50 200] [--seeds 0 1]

1. Pretrains SchNet (64 features, 3 interactions) on the embedded pretraining default (the bundled
   molecules, none of them aspirin, normal-mode sampled at 500 K), unless the run exists.
2. Finetunes on ``frames`` training frames of ../shared/data/rmd17_aspirin (50 validation, 800 test
   frames, disjoint), from scratch and from the pretrained backbone, for each seed.
3. Writes ``results.json`` and prints a table of test energy and force MAE.

Finished runs are reused, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from aspirin import ASPIRIN, aspirin_overrides

from dens_lightning.config import load_config
from dens_lightning.runner import finetune_config, run_finetune, run_pretrain

MODEL = ["model.hidden_channels=64", "model.num_filters=64", "model.num_interactions=3"]


def pretrain(out: Path, epochs: int) -> Path:
    run_dir = out / "pretrain"
    if (run_dir / "model.safetensors").exists():
        return run_dir
    cfg = load_config("pretrain", overrides=[*MODEL, f"trainer.max_epochs={epochs}"])
    start = time.time()
    run_pretrain(cfg, run_dir, progress=False)
    (run_dir / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    return run_dir


def finetune(out: Path, frames: int, seed: int, steps: int, pretrained: Path | None) -> dict:
    name = f"{'pretrained' if pretrained else 'scratch'}-{frames}-seed{seed}"
    run_dir = out / name
    result_file = run_dir / "test_metrics.json"
    if not result_file.exists():
        overrides = aspirin_overrides(frames, steps, seed)
        cfg = finetune_config(pretrained, overrides=overrides + ([] if pretrained else MODEL))
        start = time.time()
        run_finetune(cfg, run_dir, from_path=pretrained, progress=False)
        (run_dir / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    return {"run": name, "frames": frames, "seed": seed, "pretrained": bool(pretrained)} | json.loads(
        result_file.read_text()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/transfer_aspirin"))
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 50])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=5000, help="finetune optimizer steps")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    args = parser.parse_args()
    if not ASPIRIN.exists():
        print(f"{ASPIRIN}: not found (the shared data sets are not on this machine)", file=sys.stderr)
        return 1
    pretrained = pretrain(args.out, args.pretrain_epochs)
    rows = []
    for seed in args.seeds:  # seed-major, so a partial sweep already compares every size
        for frames in args.frames:
            for source in (None, pretrained):
                rows.append(finetune(args.out, frames, seed, args.steps, source))
                print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| frames | init | energy MAE (meV) | force MAE (meV/Å) |\n|---|---|---|---|")
    for frames in sorted(args.frames):
        for flag in (False, True):
            group = [r for r in rows if r["frames"] == frames and r["pretrained"] == flag]
            energy = [r["energy_mae_meV"] for r in group]
            forces = [r["forces_mae_meV_per_A"] for r in group]
            print(
                f"| {frames} | {'pretrained' if flag else 'scratch'} | "
                f"{statistics.mean(energy):.1f} ({', '.join(f'{e:.1f}' for e in energy)}) | "
                f"{statistics.mean(forces):.1f} ({', '.join(f'{f:.1f}' for f in forces)}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
