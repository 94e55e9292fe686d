"""`make demo`: train on the embedded default data and print where the model is and its test errors.

Runs ``python -m dens_lightning finetune`` on the embedded labelled default (RDKit conformers of
small molecules, perturbed, labelled by GFN2-xTB or MMFF94) with a budget that finishes in a few
minutes on 2 CPU cores. (Pretraining joins the demo when the pretrain stage lands.)
"""

from __future__ import annotations

import datetime
import sys

from .cli import main as cli_main

DEMO_BUDGET = ["trainer.max_epochs=30", "--no-progress"]


def main() -> int:
    run_dir = f"runs/demo/{datetime.datetime.now():%Y%m%d-%H%M%S}/finetune"
    print(f"demo: finetune SchNet on the embedded default data -> {run_dir}", flush=True)
    code = cli_main(["finetune", "--run-dir", run_dir, *DEMO_BUDGET, *sys.argv[1:]])
    if code == 0:
        print(
            f"demo: done. Inspect the model with: python -m dens_lightning info {run_dir}/model.safetensors"
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
