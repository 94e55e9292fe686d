"""Command line: argv → a validated config → :mod:`dens_lightning.runner`.

Bad input ends with one line on stderr and exit status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import InputError

TRAINING_COMMANDS = ("finetune",)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file merged over the packaged default")
    parser.add_argument("--run-dir", type=Path, help="run directory (default runs/<stage>/<timestamp>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dens_lightning",
        description="Denoising pretraining and DeNS finetuning of interatomic potentials.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    finetune = commands.add_parser(
        "finetune", help="train energies and forces (from scratch, or --from a pretrained model)"
    )
    _add_training_arguments(finetune)
    finetune.add_argument(
        "--from", dest="from_path", type=Path, help="pretrain run directory, .ckpt or model.safetensors"
    )

    test = commands.add_parser("test", help="errors of a model on a data file, as one JSON object")
    test.add_argument("--model", required=True, type=Path, help="model.safetensors or a run directory")
    test.add_argument("--data", required=True, type=Path, help="structure file with energies and/or forces")
    test.add_argument("--batch-size", type=int, default=64)
    test.add_argument(
        "--units", default="auto", help="units of the data file, e.g. kcal/mol (default: by format)"
    )
    test.add_argument("--energy-key")
    test.add_argument("--forces-key")

    info = commands.add_parser("info", help="what a model file holds, as one JSON object")
    info.add_argument("path", type=Path)

    for sub in (finetune, test, info):
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def _training_config(args: argparse.Namespace, stage: str):
    from .config import load_config

    if args.resume:
        if args.run_dir is None:
            raise InputError("--resume needs --run-dir: the run to continue")
        saved = args.run_dir / "config.yaml"
        if not saved.exists():
            raise InputError(f"{saved}: not found; nothing to resume")
        if args.config:
            raise InputError("--resume uses the run's own config.yaml; drop --config (overrides are allowed)")
        return load_config(stage, str(saved), args.overrides)
    return load_config(stage, args.config, args.overrides)


def run(args: argparse.Namespace) -> int:
    if args.command == "finetune":
        from .runner import run_finetune

        cfg = _training_config(args, "finetune")
        result = run_finetune(
            cfg, args.run_dir, resume=args.resume, from_path=args.from_path, progress=not args.no_progress
        )
        print(f"model: {result.model_path}")
        if result.test_metrics:
            print("test: " + json.dumps(result.test_metrics))
        return 0
    if args.command == "test":
        from .data.readers import ReadOptions
        from .runner import test_model

        options = ReadOptions(units=args.units, energy_key=args.energy_key, forces_key=args.forces_key)
        print(json.dumps(test_model(args.model, args.data, args.batch_size, options)))
        return 0
    if args.command == "info":
        from .artifacts import read_metadata, resolve_model_path

        print(json.dumps(read_metadata(resolve_model_path(args.path)), indent=2))
        return 0
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    not_overrides = [a for a in extra if a.startswith("-") or "=" not in a]
    if not_overrides or (extra and args.command not in TRAINING_COMMANDS):
        parser.error(f"unrecognized arguments: {' '.join(not_overrides or extra)}")
    args.overrides = extra
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        return run(args)
    except InputError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
