"""Build one entry of the model zoo from nothing: pretrain with ``configs/zoo/NAME.yaml`` (resumed
when its run directory exists, so an interrupted build continues), then copy the model file into the
package's zoo with its SHA-256 and the pretraining's wall time, summed over resumed parts
(``dens_lightning/zoo_files/index.json``).

    python scripts/zoo_entry.py NAME [--run-dir runs/zoo/NAME]
"""

import argparse
import sys
from pathlib import Path

from dens_lightning.cli import main as dens_lightning
from dens_lightning.experiment.transfer import timed
from dens_lightning.zoo import add_entry

ROOT = Path(__file__).resolve().parent.parent


def build(name: str, run_dir: Path) -> int:
    config = ROOT / "configs" / "zoo" / f"{name}.yaml"
    if not config.exists():
        print(f"{config}: no recipe for {name!r}", file=sys.stderr)
        return 2
    resume = (run_dir / "checkpoints" / "last.ckpt").exists()
    argv = ["pretrain", "--run-dir", str(run_dir), "--no-progress"]
    argv += ["--resume"] if resume else ["--config", str(config)]
    run_dir.mkdir(parents=True, exist_ok=True)
    status, seconds = timed(lambda: dens_lightning(argv), run_dir)
    if status == 0:
        rebuild = f"python scripts/zoo_entry.py {name}"
        description = config.read_text().splitlines()[0].lstrip("# ")
        item = add_entry(name, run_dir / "model.safetensors", rebuild, description, seconds)
        print(f"zoo:{item.name}: {item.size_bytes / 2**20:.1f} MB, sha256 {item.sha256}")
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--run-dir", type=Path)
    args = parser.parse_args()
    sys.exit(build(args.name, args.run_dir or ROOT / "runs" / "zoo" / args.name))
