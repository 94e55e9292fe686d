"""notebooks/transfer_learning.ipynb runs top to bottom at its tiny size, so it never rots."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "transfer_learning.ipynb"


@pytest.mark.slow
def test_transfer_learning_notebook_runs(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("DENS_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("DENS_NOTEBOOK_DIR", str(tmp_path / "runs"))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # the kernel inherits the environment; a failing cell raises with its traceback
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "force MAE, pretrained / scratch:" in text
    assert "mean temperature" in text
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 4  # pretraining loss, parity plot, learning curve, MD trace
    runs = tmp_path / "runs"
    for run in ("pretrain", "scratch", "pretrained"):
        assert (runs / run / "model.safetensors").exists()
    assert (runs / "learning_curve" / "results.csv").read_text().count(
        "\n"
    ) == 1 + 2 * 2  # header, 2 arms x 2 sizes


def test_notebook_is_saved_without_errors():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
