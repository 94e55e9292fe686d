"""The package's layers: no module imports from a layer above its own (cli → experiment → runner →
training, config and warm start → tasks → models, evaluation and model files → data → the base)."""

import ast

from tests.conftest import ROOT

PACKAGE = ROOT / "dens_lightning"
# top-level module or subpackage → layer (higher imports lower, never the reverse)
LAYERS = {
    "testing": 9,
    "cli": 8,
    "__main__": 8,
    "demo": 8,
    "experiment": 7,
    "runner": 6,
    "run_outputs": 6,
    "training": 5,
    "config": 5,
    "warm_start": 5,
    "replay": 5,
    "tasks": 4,
    "models": 3,
    "calculator": 3,
    "export": 3,
    "evaluation": 3,
    "artifacts": 3,
    "zoo": 3,
    "card": 3,
    "data": 2,
}
BASE = 1  # errors, files, version, metrics, allocator, run_directory: import nothing above them


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], BASE) if len(parts) > 1 else LAYERS["cli"]  # the package: its front door


def imports(path):
    """(imported module, line) for every import of the package in the file at ``path``."""
    module = "dens_lightning." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            yield ".".join(base + ([node.module] if node.module else [])), node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dens_lightning"):
            yield node.module, node.lineno


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = "dens_lightning." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = own.removesuffix(".__init__")
        for target, line in imports(path):
            if layer(target) > layer(own):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_every_top_level_module_has_a_layer():
    names = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()
    }
    unplaced = (
        names
        - set(LAYERS)
        - {"__init__", "errors", "files", "version", "metrics", "allocator", "run_directory"}
    )
    assert not unplaced, f"give these a layer in LAYERS or the base: {sorted(unplaced)}"
