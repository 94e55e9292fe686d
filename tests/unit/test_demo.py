"""`make demo` ends with a readable summary: test errors with units, where the model is, what next."""

from pathlib import Path

from dens_lightning.demo import summary
from dens_lightning.metrics import METRIC_NAMES


def test_the_summary_gives_every_test_error_with_its_unit_and_the_next_commands():
    metrics = {"n_structures": 48} | {name: 10.0 + k for k, name in enumerate(METRIC_NAMES)}
    text = summary(metrics, Path("runs/demo/x"), 125.0)
    assert "done in 2.1 min" in text and "48 held-out structures" in text
    for k, unit in enumerate(["meV", "meV", "meV/atom", "meV/Å", "meV/Å"]):
        assert f"{10.0 + k:.1f} {unit}" in text
    assert "runs/demo/x/finetune/model.safetensors" in text
    assert "finetune --from runs/demo/x/pretrain" in text
    assert "{" not in text  # no raw JSON


def test_a_missing_error_reads_as_not_available():
    text = summary({"n_structures": 3, "forces_mae_meV_per_A": 5.0}, Path("r"), 1.0)
    assert "n/a" in text and "5.0 meV/Å" in text
