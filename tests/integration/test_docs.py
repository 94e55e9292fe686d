"""The documentation site builds without warnings, its reference covers every command-line option and
every config key (each with a description), the commands it shows are valid, and user-facing text
describes the software, not how it was made."""

import argparse
import html
import importlib.util
import re
import shlex

import pytest

from dens_lightning.cli import build_parser
from dens_lightning.config import load_config
from tests.conftest import ROOT

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
DOCS = ROOT / "docs"
USER_FILES = [
    ROOT / "README.md",
    ROOT / "EXPERIMENTS.md",
    ROOT / "BENCHMARKS.md",
    *sorted(DOCS.rglob("*.md")),
]
USER_FILES = [p for p in USER_FILES if "_build" not in p.parts]


def reference():
    spec = importlib.util.spec_from_file_location("dens_reference", DOCS / "_ext" / "dens_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("site")
    assert build_main(["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]) == 0
    return out


def page_text(site, name: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", (site / name).read_text()))


def option_strings(parser: argparse.ArgumentParser, prefix=()):
    """(command, option) for every option of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from option_strings(sub, (*prefix, name))
        else:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    yield " ".join(prefix), option


@pytest.mark.slow
def test_every_command_line_option_is_in_the_reference(site):
    text = page_text(site, "reference/cli.html")
    missing = [
        f"{command} {option}" for command, option in option_strings(build_parser()) if option not in text
    ]
    assert not missing, missing


@pytest.mark.slow
def test_every_config_key_is_in_the_reference_with_a_description(site):
    ref = reference()
    from dens_lightning.models import BACKBONES

    keys = set(ref.stage_schema()) - {"stage"}  # stage: set by the command, not a key to give
    for name in BACKBONES:
        keys |= set(ref.model_schema(name))
    described = ref.documented_keys()
    assert not [k for k in sorted(keys) if not described.get(k)], "keys without a description"
    text = page_text(site, "reference/config.html")
    assert not [k for k in sorted(keys) if k not in text], "keys missing from the configuration reference"


def shown_commands():
    """Every ``python -m dens_lightning pretrain|finetune ...`` line of the user-facing files."""
    for path in USER_FILES:
        for line in path.read_text().splitlines():
            match = re.search(r"python -m dens_lightning (pretrain|finetune)\b([^`#|]*)", line)
            if match:
                yield path.name, match.group(1), match.group(2)


def test_shown_training_commands_are_valid():
    checked = 0
    from dens_lightning.models import BACKBONES

    for _, stage, rest in shown_commands():
        args = shlex.split(rest.replace("\\", " "))
        if "--from" in args or "--resume" in args or any(a.isupper() for a in args):
            continue  # needs a run that exists, or a placeholder
        if any(a.startswith("model.name=") and a.split("=", 1)[1] not in BACKBONES for a in args):
            continue  # the how-to's own backbone, registered only where its code runs
        files, overrides, skip = [], [], False
        for k, arg in enumerate(args):
            if skip:
                skip = False
            elif arg == "--config":
                files.append(str(ROOT / args[k + 1]))
                skip = True
            elif "=" in arg and not arg.startswith("-"):
                overrides.append(arg)
        if all((ROOT / f).exists() for f in files):
            load_config(stage, files, overrides)
            checked += 1
    assert checked >= 5


OVERRIDE = re.compile(r"^[a-z_]+(\.[A-Za-z_0-9]+)*=")


def test_every_shown_command_parses():
    """Each ``python -m dens_lightning ...`` line in a code block of the user-facing files (except usage
    summaries that list alternatives in brackets) is accepted by the command-line parser."""
    parser, parsed = build_parser(), 0
    for path in USER_FILES:
        fenced = False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced
            if not fenced:
                continue  # prose may name a command without all its arguments
            match = re.search(r"python -m dens_lightning (\w[^`]*)", line)
            if not match or "[" in line or "|" in line or line.rstrip().endswith("\\"):
                continue
            command = re.sub(r"\s#.*$", "", match.group(1))  # a trailing comment
            argv = [a for a in shlex.split(command) if not OVERRIDE.match(a)]  # overrides: checked above
            if argv and argv[0] in {"pretrain", "finetune", "test", "sample", "info", "export", "experiment"}:
                try:
                    parser.parse_args(argv)
                except SystemExit as err:
                    raise AssertionError(f"{path.name}: {line.strip()}") from err
                parsed += 1
    assert parsed >= 10


ORGANISATIONAL = re.compile(
    r"\b(this task|the (first|second|third|fourth|fifth|sixth|\w+th) session|lent|issue \d+|issue #\d+)\b",
    re.I,
)


def test_user_facing_text_describes_the_software_not_how_it_was_made():
    hits = [
        f"{path.relative_to(ROOT)}:{k + 1}: {line.strip()}"
        for path in USER_FILES
        for k, line in enumerate(path.read_text().splitlines())
        if ORGANISATIONAL.search(line)
    ]
    assert not hits, "\n".join(hits)
