"""`make demo`: denoising pretraining, then finetuning from it, on the embedded default data.

1. ``python -m dens_lightning pretrain``: the bundled molecules, normal-mode sampled with RDKit/MMFF94
   (about 65,000 conformations, generated once and cached), no labels; a short budget.
2. ``python -m dens_lightning finetune --from <pretrain run>``: the embedded labelled default (six
   other molecules, labelled by GFN2-xTB or MMFF94).

Sized to finish in a few minutes on 2 CPU cores; extra arguments go to both commands.
"""

from __future__ import annotations

import datetime
import sys

from .cli import main as cli_main

PRETRAIN_BUDGET = ["trainer.max_steps=300", "trainer.val_check_interval=150", "--no-progress"]
FINETUNE_BUDGET = ["trainer.max_epochs=30", "--no-progress"]


def main() -> int:
    root = f"runs/demo/{datetime.datetime.now():%Y%m%d-%H%M%S}"
    print(f"demo 1/2: denoising pretraining of SchNet on the embedded default -> {root}/pretrain", flush=True)
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
        print(f"demo: done. Inspect the model: python -m dens_lightning info {root}/finetune")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
