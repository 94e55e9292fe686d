"""Command line: argv → a validated config → :mod:`dens_lightning.runner`.

Bad input ends with one line on stderr and exit status 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .data.sampling import METHODS
from .errors import InputError, Interrupted, NumericalFault
from .files import json_text

OVERRIDE_COMMANDS = ("pretrain", "finetune", "experiment")  # take key=value overrides
OVERRIDES_HELP = """config keys:
  any config key can be set after the options as dotted.key=value (merged over the packaged
  default and --config, in that order), for example
  %(prog)s {example}
  the keys and their defaults: dens_lightning/configs/{stage}.yaml, and the configuration reference"""


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        help="YAML file merged over the packaged default (repeatable: merged in order)",
    )
    parser.add_argument("--run-dir", type=Path, help="run directory (default runs/<stage>/<timestamp>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar or model summary (for logs)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dens_lightning",
        description="Denoising pretraining and DeNS finetuning of interatomic potentials.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    pretrain = commands.add_parser(
        "pretrain",
        help="denoising pretraining of a backbone (no labels needed)",
        usage="%(prog)s [options] [dotted.key=value ...]",
        epilog=OVERRIDES_HELP.format(
            stage="pretrain", example="model.name=painn task.noise.sigma=0.05 trainer.max_epochs=20"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_arguments(pretrain)

    finetune = commands.add_parser(
        "finetune",
        help="train energies and forces (from scratch, or --from a pretrained model)",
        usage="%(prog)s [options] [dotted.key=value ...]",
        epilog=OVERRIDES_HELP.format(
            stage="finetune",
            example="data.path=train.xyz data.units=kcal/mol task.dens.enabled=true trainer.max_epochs=200",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_arguments(finetune)
    finetune.add_argument(
        "--from",
        dest="from_path",
        type=Path,
        help="pretrain run directory, .ckpt, model.safetensors or zoo:NAME",
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
    test.add_argument(
        "--per-structure", type=Path, metavar="CSV", help="also write each structure's errors to this CSV"
    )

    sample = commands.add_parser(
        "sample", help="non-equilibrium conformations of molecules with RDKit, written as extxyz"
    )
    molecules = sample.add_argument_group("molecules (at least one)")
    molecules.add_argument("--smiles", nargs="+", default=[], metavar="S", help="SMILES strings")
    molecules.add_argument(
        "--smiles-file", type=Path, help='one SMILES per line ("bundled": the packaged list)'
    )
    molecules.add_argument("--sdf", type=Path, help="an SDF file (its molecular graphs are used)")
    sample.add_argument("--num", type=int, required=True, help="conformations per molecule")
    sample.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output extxyz file; a path without extension writes a memory-mapped store (a directory) "
        "for pretraining sets too large to read into memory",
    )
    sample.add_argument("--method", choices=METHODS, default="normal-mode")
    sample.add_argument("--temperature", type=float, default=300.0, help="K (normal-mode, md)")
    sample.add_argument("--displacement", type=float, default=0.05, help="Å, std (perturb)")
    sample.add_argument("--conformers", type=int, default=1, help="ETKDG conformers per molecule")
    sample.add_argument("--label", choices=("none", "mmff", "xtb"), default="none")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument(
        "--workers", type=int, default=None, help="processes sampling and labelling (default: every core)"
    )
    sample.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")

    zoo = commands.add_parser("zoo", help="the pretrained models shipped with the package (use: zoo:NAME)")
    zoo.add_argument("--json", action="store_true", help="everything recorded of each model, as JSON")

    info = commands.add_parser("info", help="what a model file holds, as one JSON object")
    info.add_argument("path", type=Path)
    info.add_argument("--card", action="store_true", help="the model card (Markdown) instead of JSON")

    export = commands.add_parser(
        "export", help="energy, forces and virial as one ahead-of-time graph, for use outside Python"
    )
    export.add_argument("path", type=Path, help="model.safetensors or a run directory")
    export.add_argument("--out", required=True, type=Path, help="output file (.pt2)")
    export.add_argument(
        "--format",
        choices=("pt2", "aoti"),
        default="pt2",
        help="pt2: torch.export program; aoti: AOTInductor package for C++ (needs a C++ compiler)",
    )
    export.add_argument("--device", default="cpu", help="device the exported graph runs on (cpu, cuda)")

    experiment = commands.add_parser("experiment", help="experiments built from many runs")
    kinds = experiment.add_subparsers(dest="experiment", required=True)
    transfer = kinds.add_parser(
        "transfer", help="pretrained against scratch over training-set sizes and seeds (resumable)"
    )
    transfer.add_argument(
        "--config", required=True, type=Path, help="an experiment YAML file (see configs/experiment/)"
    )
    transfer.add_argument("--run-dir", type=Path, help="output folder (default runs/experiment/<name>)")
    transfer.add_argument(
        "--no-progress", action="store_true", help="no progress bars or model summaries (for logs)"
    )

    for sub in (pretrain, finetune, test, sample, zoo, info, export, experiment, transfer):
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def _training_config(args: argparse.Namespace, stage: str, pretrained=None):
    from .runner import training_config

    return training_config(stage, args.config, args.overrides, args.run_dir, args.resume, pretrained)


def run(args: argparse.Namespace) -> int:
    if args.command == "pretrain":
        from .runner import run_pretrain

        cfg = _training_config(args, "pretrain")
        result = run_pretrain(cfg, args.run_dir, resume=args.resume, progress=not args.no_progress)
        if not result.is_global_zero:  # the other ranks of a multi-process run stay quiet
            return 0
        print(f"model: {result.model_path}")
        print(f"finetune it with: python -m dens_lightning finetune --from {result.run_dir}")
        return 0
    if args.command == "sample":
        return _sample(args)
    if args.command == "finetune":
        from .runner import run_finetune
        from .warm_start import pretrained_backbone

        # read once: its architecture makes the config, its tensors start the model
        pretrained = pretrained_backbone(args.from_path) if args.from_path and not args.resume else None
        cfg = _training_config(args, "finetune", pretrained)
        result = run_finetune(
            cfg, args.run_dir, resume=args.resume, from_path=pretrained, progress=not args.no_progress
        )
        if not result.is_global_zero:
            return 0
        if result.pretrained_tensors is not None:
            count = result.pretrained_tensors
            heads = "its energy head kept" if result.pretrained_energy_head else "heads start fresh"
            print(f"loaded all {count} backbone tensors from {args.from_path}; {heads}")
        if result.pretrained_encoder:
            print("loaded the pretrained DeNS force encoder too")
        print(f"model: {result.model_path}")
        if result.test_metrics:
            print("test: " + json_text(result.test_metrics))
        return 0
    if args.command == "test":
        from .data.readers import ReadOptions
        from .evaluation import model_errors

        options = ReadOptions(units=args.units, energy_key=args.energy_key, forces_key=args.forces_key)
        print(json_text(model_errors(args.model, args.data, args.batch_size, options, args.per_structure)))
        return 0
    if args.command == "zoo":
        from .zoo import describe, entries, table

        described = [describe(item) for item in entries()]
        print(json_text(described) if args.json else table(described))
        return 0
    if args.command == "info":
        from .artifacts import read_metadata, resolve_model_path

        metadata = read_metadata(resolve_model_path(args.path))
        if args.card:
            from .card import model_card

            print(model_card(metadata, str(args.path)))
        else:
            print(json_text(metadata, indent=2))
        return 0
    if args.command == "export":
        from .artifacts import load_model
        from .export import export_and_check

        print(json_text(export_and_check(load_model(args.path), args.out, args.format, args.device)))
        return 0
    if args.command == "experiment":
        from .experiment.spec import load_experiment
        from .experiment.transfer import TransferExperiment

        spec = load_experiment(args.config, args.overrides)
        out = args.run_dir or Path("runs") / "experiment" / spec.name
        rows = TransferExperiment(spec, out, progress=not args.no_progress).run()
        files = ", ".join(str(out / name) for name in ("results.csv", "learning_curve.png", "summary.md"))
        print(f"{len(rows)} runs; results: {files}")
        return 0
    raise AssertionError(args.command)


def _sample(args: argparse.Namespace) -> int:
    from .data.sampling import sample_to_file

    result = sample_to_file(
        args.out,
        smiles=args.smiles,
        smiles_file=args.smiles_file,
        sdf=args.sdf,
        num=args.num,
        method=args.method,
        temperature=args.temperature,
        displacement=args.displacement,
        conformers=args.conformers,
        label=args.label,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(
        f"wrote {result.conformations} conformations of {result.molecules} molecules to {args.out} "
        f"({args.method}); rejected {result.report.rejected_bonds} samples whose bond graph changed"
        + (f", dropped {result.report.unlabelled} whose labelling failed" if result.report.unlabelled else "")
    )
    if result.short:
        print(f"warning: fewer than {args.num} conformations for {', '.join(result.short)}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    not_overrides = [a for a in extra if a.startswith("-") or "=" not in a]
    if not_overrides or (extra and args.command not in OVERRIDE_COMMANDS):
        parser.error(f"unrecognized arguments: {' '.join(not_overrides or extra)}")
    args.overrides = extra
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    try:
        return run(args)
    except (InputError, NumericalFault) as err:  # one line each; exit 2 for bad input, 3 for a NaN loss
        if args.debug:
            raise
        _line_to_stderr(f"error: {err}")
        return 3 if isinstance(err, NumericalFault) else 2
    except Interrupted as err:
        _line_to_stderr(f"interrupted: {err}")
        return err.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _line_to_stderr(text: str) -> None:
    """One write per line: the ranks of a multi-process run share stderr, and ``print`` writes the
    text and its newline separately, so two ranks' lines could interleave."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
