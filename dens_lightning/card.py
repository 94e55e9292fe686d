"""The model card: a short README written from a model file's metadata, so a shared model explains
itself (what was trained on what, how well, and how to load it). Each run directory gets one, and
``info --card`` prints it for any model file."""

from __future__ import annotations

from pathlib import Path

from ase.data import chemical_symbols

from .artifacts import has_energy_head

OBJECTIVES = {
    "denoise": "predict the noise added to sampled conformations (no labels)",
    "supervised": "energies and forces of the pretraining set",
    "dens": "energies and forces, with DeNS as an auxiliary task",
}
TEST_COLUMNS = (
    ("energy_mae_meV", "energy MAE (meV)"),
    ("energy_rmse_meV", "energy RMSE (meV)"),
    ("energy_mae_meV_per_atom", "energy MAE (meV/atom)"),
    ("forces_mae_meV_per_A", "forces MAE (meV/Å)"),
    ("forces_rmse_meV_per_A", "forces RMSE (meV/Å)"),
)


def _settings(values: dict, separator: str = "=") -> str:
    """``a=1, b=2`` of a dict's items, sorted by key."""
    return ", ".join(f"{k}{separator}{v}" for k, v in sorted(values.items()))


def _elements(metadata: dict) -> str:
    return ", ".join(chemical_symbols[z] for z in metadata.get("elements", [])) or "not recorded"


def _hyperparameters(metadata: dict) -> str:
    backbone = metadata["backbone"]
    return f"{backbone['name']} ({_settings(backbone['hyperparameters'])})"


def _data(data: dict) -> list[str]:
    """Table rows on the training data: files with their hashes, or the generated data set."""
    rows = []
    for split, entry in sorted(data.get("files", {}).items()):
        rows.append(f"| {split} file | `{Path(entry['path']).name}` (sha256 `{entry['sha256'][:16]}…`) |")
    store = data.get("embedded_store")
    if store:
        sampler = store.get("sampler") or {}
        described = _settings(sampler, " ")
        count = store.get("structures")
        rows.append(f"| data | embedded default: {count} sampled conformations ({described}) |")
    elif data.get("embedded"):
        labels = data.get("labeller") or "none"
        rows.append(f"| data | embedded default (RDKit conformations, labels: {labels}) |")
    if "qm9" in data:
        described = _settings({k: v for k, v in data["qm9"].items() if k != "path"}, " ")
        rows.append(f"| data | conformations around QM9 DFT minima ({described}) |")
    sizes = data.get("sizes")
    if sizes:
        counts = [f"{sizes[split]} {split}" for split in ("train", "val", "test") if split in sizes]
        rows.append(f"| structures | {', '.join(counts)} |")
    units = data.get("units_in_file")
    if units:
        rows.append(f"| units of the data | energy {units.get('energy')}, length {units.get('length')} |")
    return rows


def data_description(data: dict) -> str:
    """The training data in one line (the card's data rows), for listings."""
    return "; ".join(row.strip("| ").replace(" | ", ": ", 1) for row in _data(data))


LEVELS = {"xtb": "GFN2-xTB (tblite)", "mmff": "MMFF94 (RDKit)"}


def _training(metadata: dict) -> list[str]:
    data = metadata.get("data", {})
    rows = []
    origin = data.get("pretrained_from")
    if origin:
        head = "; its energy head kept" if origin.get("energy_head_loaded") else ""
        if origin.get("head_init") == "zero":
            head = "; a new energy head, its output layer zeroed"
        objective = f", objective {origin['objective']}" if origin.get("objective") else ""
        start = origin.get("zoo") or origin.get("path")  # zoo:NAME as the user named it
        rows.append(
            f"| started from | `{start}` (stage {origin.get('stage')}{objective}; "
            f"{origin.get('tensors_loaded')} backbone tensors loaded{head}) |"
        )
        before = origin.get("validation_before_finetuning")
        if before:
            energy, forces = before.get("energy_mae_meV"), before.get("forces_mae_meV_per_A")
            rows.append(
                f"| validation errors before finetuning | energy MAE {_number(energy)} meV, force MAE "
                f"{_number(forces)} meV/Å ({before.get('n_structures')} structures; the pretrained "
                "start, energy references fitted) |"
            )
    elif metadata.get("stage") == "finetune":
        rows.append("| started from | random initialisation |")
    dens = data.get("dens")
    if dens:
        values = _settings({k: v for k, v in dens.items() if k != "enabled"})
        rows.append(f"| DeNS | denoising of non-equilibrium structures as an auxiliary task ({values}) |")
    noise = metadata.get("noise")
    if noise:
        rows.append(f"| denoising | {_settings(noise)} |")
    if metadata.get("objective"):
        objective = metadata["objective"]
        rows.append(f"| pretraining objective | {objective}: {OBJECTIVES.get(objective, '')} |")
        level = LEVELS.get(str(data.get("labeller")))
        if objective != "denoise" and level:
            rows.append(
                f"| level of theory | {level}: the labels it was trained on (validation errors below) |"
            )
    if metadata.get("steps") is not None:
        rows.append(f"| optimizer steps | {metadata['steps']} |")
    validation = metadata.get("validation") or {}
    if validation.get("noise_loss") is not None:
        rows.append(f"| validation noise loss | {validation['noise_loss']:.4f} (best) |")
    if validation.get("forces_mae_meV_per_A") is not None:
        rows.append(
            f"| validation errors | energy MAE {_number(validation.get('energy_mae_meV'))} meV, force MAE "
            f"{_number(validation['forces_mae_meV_per_A'])} meV/Å "
            f"({validation.get('n_structures')} structures) |"
        )
    return rows


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _test_metrics(metrics: dict | None) -> list[str]:
    if not metrics:
        return ["No test split: no test errors recorded. Measure them with `python -m dens_lightning test`."]
    header = "| " + " | ".join(label for _, label in TEST_COLUMNS) + " |"
    values = "| " + " | ".join(_number(metrics.get(key)) for key, _ in TEST_COLUMNS) + " |"
    return [
        f"On the held-out test split ({metrics.get('n_structures')} structures):",
        "",
        header,
        "|" + "---|" * len(TEST_COLUMNS),
        values,
    ]


def _usage(metadata: dict, path: str) -> list[str]:
    if not has_energy_head(metadata):
        return [
            "A pretrained backbone (denoising), not a potential: finetune it on energies and forces:",
            "",
            "```",
            f"python -m dens_lightning finetune --from {path} --config YOUR_DATA.yaml",
            "```",
        ]
    return [
        "```python",
        "from dens_lightning import load_model",
        "from dens_lightning.calculator import DensCalculator",
        "",
        "# a torch.nn.Module: energy (eV) and forces (eV/Å) of an ase.Atoms or a list of them",
        f'model = load_model("{path}")',
        "out = model(atoms)",
        "# an ASE calculator, for dynamics and relaxations",
        f'atoms.calc = DensCalculator("{path}")',
        "```",
        "",
        "```",
        "# errors on other data; finetune further; export for use outside Python",
        f"python -m dens_lightning test --model {path} --data FILE",
        f"python -m dens_lightning finetune --from {path} --config YOUR_DATA.yaml",
        f"python -m dens_lightning export {path} --out model.pt2",
        "```",
    ]


def model_card(metadata: dict, path: str = "model.safetensors") -> str:
    """Markdown describing the model whose metadata is given; ``path`` is how the usage lines name it."""
    stage = metadata.get("stage", "unknown")
    what = {"pretrain": "denoising-pretrained backbone", "finetune": "interatomic potential"}
    what = what.get(stage, stage)
    if stage == "pretrain" and has_energy_head(metadata):
        what = "pretrained interatomic potential"
    units = metadata.get("units", {})
    rows = [
        f"| stage | {stage} |",
        f"| backbone | {_hyperparameters(metadata)} |",
        f"| cutoff | {metadata.get('cutoff')} Å |",
        f"| elements | {_elements(metadata)} |",
        f"| precision | {metadata.get('dtype')} |",
        *_data(metadata.get("data", {})),
        *_training(metadata),
        f"| units | {_settings(units, ' ')} |",
        f"| written by | dens_lightning {metadata.get('package_version')} (model file format "
        f"{metadata.get('format_version')}) |",
    ]
    lines = [
        f"# {metadata['backbone']['name']} {what}",
        "",
        "Written by dens_lightning from the metadata of `model.safetensors` (weights plus JSON metadata,"
        " loaded without pickle; `python -m dens_lightning info` prints all of it).",
        "",
        "| | |",
        "|---|---|",
        *rows,
        "",
    ]
    if stage == "finetune":
        lines += ["## Test errors", "", *_test_metrics(metadata.get("test_metrics")), ""]
    lines += ["## Use it", "", *_usage(metadata, path), ""]
    return "\n".join(lines)
