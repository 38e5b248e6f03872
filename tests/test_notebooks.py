"""The tutorial notebooks in docs/notebooks/ run from a clean kernel, top to bottom, on the bundled
model. They are stored without outputs; the executed copies go to build/notebooks/, where the
documentation site picks them up (docs/hooks.py), so the site shows the outputs of this run."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmscope.assets import bundled_model_dir

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "build" / "notebooks"

pytestmark = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


def test_there_are_tutorials():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_from_a_clean_kernel(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not stored, f"{path.name} is stored with outputs: clear them before committing"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    warnings = [o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"]
    assert not [w for w in warnings if "vlmscope" in w], warnings  # none of ours (tqdm's note on ipywidgets is not)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED / path.name)
