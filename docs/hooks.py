"""MkDocs hook: render the tutorial notebooks with the outputs of the test suite's run.

tests/test_notebooks.py executes every notebook of docs/notebooks/ from a clean kernel and writes
the executed copy to build/notebooks/; `make test` runs it before building this site, so the site
shows outputs produced by the code as it is. Without an executed copy the stored notebook (code,
no outputs) is rendered."""

from __future__ import annotations

from pathlib import Path

EXECUTED = Path(__file__).resolve().parents[1] / "build" / "notebooks"


def on_files(files, config):
    for f in files:
        if f.src_uri.startswith("notebooks/") and f.src_uri.endswith(".ipynb"):
            executed = EXECUTED / Path(f.src_uri).name
            if executed.is_file():
                f.abs_src_path = str(executed)
    return files
