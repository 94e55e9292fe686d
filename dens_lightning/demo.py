"""`make demo`: denoising pretraining, then finetuning from it, on the embedded default data.

1. ``python -m dens_lightning pretrain``: the bundled molecules, normal-mode sampled with RDKit/MMFF94
   (about 65,000 conformations, generated once and cached), no labels; a short budget.
2. ``python -m dens_lightning finetune --from <pretrain run>``: the embedded labelled default (six
   other molecules, labelled by GFN2-xTB or MMFF94).

Sized to finish in a few minutes on 2 CPU cores; extra arguments go to both commands.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

from .cli import main as cli_main

PRETRAIN_BUDGET = ["trainer.max_steps=300", "trainer.val_check_interval=150", "--no-progress"]
FINETUNE_BUDGET = ["trainer.max_epochs=30", "--no-progress"]


def main() -> int:
    started = time.perf_counter()
    root = f"runs/demo/{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print(f"demo 1/2: denoising pretraining of PaiNN on the embedded default -> {root}/pretrain", flush=True)
    code = cli_main(["pretrain", "--run-dir", f"{root}/pretrain", *PRETRAIN_BUDGET, *sys.argv[1:]])
    if code != 0:
        return code
    print(f"demo 2/2: finetune from it on the embedded labelled default -> {root}/finetune", flush=True)
    code = cli_main(
        [
            "finetune",
            "--from",
            f"{root}/pretrain",
            "--run-dir",
            f"{root}/finetune",
            *FINETUNE_BUDGET,
            *sys.argv[1:],
        ]
    )
    if code == 0:
        metrics = json.loads(Path(root, "finetune", "test_metrics.json").read_text())
        print(summary(metrics, Path(root), time.perf_counter() - started))
    return code


def summary(metrics: dict, root: Path, seconds: float) -> str:
    """What the demo made, its test errors with units, and what to try next."""
    model = root / "finetune"

    def value(key: str, unit: str) -> str:
        number = metrics.get(key)
        return "n/a" if number is None else f"{number:.1f} {unit}"

    return "\n".join(
        [
            "",
            f"demo: done in {seconds / 60:.1f} min",
            f"test errors on {metrics['n_structures']} held-out structures of the embedded labelled set:",
            f"  energy  MAE {value('energy_mae_meV', 'meV'):>12}"
            f"  ({value('energy_mae_meV_per_atom', 'meV/atom')})  RMSE {value('energy_rmse_meV', 'meV')}",
            f"  forces  MAE {value('forces_mae_meV_per_A', 'meV/Å'):>12}"
            f"  RMSE {value('forces_rmse_meV_per_A', 'meV/Å')}",
            f"model:       {model / 'model.safetensors'}",
            f"model card:  {model / 'README.md'}",
            f"pretrained:  {root / 'pretrain' / 'model.safetensors'}",
            "next:",
            f"  python -m dens_lightning info {model} --card   # what the model is",
            f"  python -m dens_lightning test --model {model} --data FILE   # errors on your data",
            f"  python -m dens_lightning finetune --from {root / 'pretrain'} data.path=FILE   # on your data",
            "  make docs, then open docs/_build/html/index.html   # guides and reference",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
