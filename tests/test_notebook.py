"""notebooks/compare.ipynb run top to bottom by a Jupyter kernel, from another folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

WHY = "runs the notebook in a Jupyter kernel: pip install -e '.[notebook]'"
nbclient = pytest.importorskip("nbclient", reason=f"nbclient is not installed; {WHY}")
nbformat = pytest.importorskip("nbformat", reason=f"nbformat is not installed; {WHY}")
pytest.importorskip("ipykernel", reason=f"ipykernel is not installed; {WHY}")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "compare.ipynb"


def run_notebook(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Execute the notebook with ``folder`` as the kernel's working folder; its outputs.

    The kernel imports this checkout's ``mia_bench`` and reads ``$MIA_TRACKING_URI``
    from the environment it inherits (left unset: the notebook looks for the store).
    A cell that raises fails the test (nbclient's CellExecutionError).
    """
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MIA_TRACKING_URI", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]


def text_of(outputs: list[dict]) -> str:
    """Everything the cells printed or showed as text, in order."""
    return "".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in outputs
    )


def test_without_a_store_the_notebook_says_what_to_run(tmp_path, monkeypatch):
    outputs = run_notebook(tmp_path, monkeypatch)
    said = text_of(outputs)
    assert f"No MLflow store found: no mlruns/mlflow.db in {tmp_path} or any folder above" in said
    assert "`mia-bench audit --group G`" in said
    assert not any(out.output_type == "error" for out in outputs)
    assert list(tmp_path.iterdir()) == []  # no empty store made


@pytest.mark.slow
def test_the_notebook_finds_the_store_above_and_shows_table_and_figures(audited_store, monkeypatch):
    folder = audited_store / "notebooks"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("MIA_ATTACKS", "loss,lira_online")
    outputs = run_notebook(folder, monkeypatch)
    said = text_of(outputs)
    assert "audits (groups dropout, plain) from experiment mia-bench of store sqlite:///" in said
    tables = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert "lira_online/tpr_at_fpr_0.001" in tables[0]
    assert ">plain<" in tables[0] and ">dropout<" in tables[0]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 4  # two attacks, against the accuracy gap and the loss gap
    assert not (folder / "mlruns").exists()
