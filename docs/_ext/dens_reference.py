"""Reference pages generated from the code, so they cannot drift from it.

``config-keys``: every config key of a stage (``:stage: pretrain`` or ``finetune``) or of a backbone
(``:model: painn``), with its type (from the schema dataclasses), its packaged default and its
description (the comment beside it in the packaged YAML). :func:`documented_keys` is what the tests
check against the schema.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

CONFIGS = Path(__file__).resolve().parents[2] / "dens_lightning" / "configs"
LINE = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$"
)


def yaml_keys(path: Path) -> list[tuple[str, str, str]]:
    """(dotted key, default as written, comment) for every key of a packaged YAML file, in order."""
    rows, parents = [], []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        depth = len(match["indent"]) // 2
        parents = parents[:depth] + [match["key"]]
        rows.append((".".join(parents), match["value"].strip(), (match["comment"] or "").strip()))
    return rows


def schema_fields(schema: type, prefix: str = "") -> dict[str, str]:
    """Dotted key → type name for every field of a config dataclass, nested sections included."""
    hints = typing.get_type_hints(schema)
    out = {}
    for field in dataclasses.fields(schema):
        key, hint = f"{prefix}{field.name}", hints[field.name]
        if dataclasses.is_dataclass(hint):
            out[key] = "section"
            out |= schema_fields(hint, key + ".")
        else:
            out[key] = type_name(hint)
    return out


def type_name(hint) -> str:
    text = str(hint).replace("typing.", "")
    return re.sub(r"<class '([^']+)'>", r"\1", text).replace("NoneType", "None")


def stage_schema() -> dict[str, str]:
    from dens_lightning.config import RunConfig

    keys = schema_fields(RunConfig)
    keys.pop("model"), keys.pop("trainer")  # the backbone's own keys; any lightning.Trainer argument
    keys["model"], keys["trainer"] = "section", "section"
    from dens_lightning.models.base import BackboneConfig

    keys["model.name"] = "str"
    keys |= schema_fields(BackboneConfig, "model.")  # what every backbone takes (cutoff, max_z)
    return keys


def model_schema(name: str) -> dict[str, str]:
    from dens_lightning.models import BACKBONES

    return {f"model.{k}": v for k, v in schema_fields(BACKBONES[name].Config).items()}


def documented_keys() -> dict[str, str]:
    """Every key the reference pages describe, with its description (stages and backbones)."""
    described: dict[str, str] = {}
    for path in [
        CONFIGS / "pretrain.yaml",
        CONFIGS / "finetune.yaml",
        *sorted((CONFIGS / "model").glob("*.yaml")),
    ]:
        for key, _, comment in yaml_keys(path):
            if comment and not described.get(key):
                described[key] = comment
            described.setdefault(key, "")
    return described


def table(rows: list[list[str]], header: list[str]) -> nodes.table:
    """A docutils table of plain-text cells, with literal first columns."""
    group = nodes.tgroup(cols=len(header))
    for width in (30, 18, 18, 60)[: len(header)]:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += _row(header, literal=False)
    group += head
    body = nodes.tbody()
    for row in rows:
        body += _row(row, literal=True)
    group += body
    result = nodes.table()
    result += group
    return result


def _row(cells: list[str], literal: bool) -> nodes.row:
    row = nodes.row()
    for k, text in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += nodes.literal(text=text) if literal and k < 2 and text else nodes.Text(text)
        entry += paragraph
        row += entry
    return row


class ConfigKeys(Directive):
    option_spec = {"stage": directives.unchanged, "model": directives.unchanged}

    def run(self):
        described = documented_keys()
        if "model" in self.options:
            name = self.options["model"]
            types, path = model_schema(name), CONFIGS / "model" / f"{name}.yaml"
        else:
            types, path = stage_schema(), CONFIGS / f"{self.options['stage']}.yaml"
        rows = [
            [
                key,
                default,
                types.get(key, "section" if not default else ""),
                described.get(key, "") or comment,
            ]
            for key, default, comment in yaml_keys(path)
        ]
        return [table(rows, ["key", "default", "type", "meaning"])]


def setup(app):
    app.add_directive("config-keys", ConfigKeys)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
