"""Ctrl-C at every moment of a command gives exactly one line and status 130, or, once the output
is complete, status 0 with the output intact. Each moment is chosen (the child signals itself
when a named function is entered or returns), so each assertion holds on every run."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from interrupts import DRIVER, run_interrupted

import vlmscope
from vlmscope.data.shapes import export_vqa
from vlmscope.store.layout import finished_parts

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
MASK = ["mask", IMG, "--prompt", "What colour is the square?", "--max-new-tokens", "2", "--device", "cpu"]
LINE = "vlmscope: interrupted"


def _marker(out: Path) -> dict | None:
    path = out / "vlmscope-output.json"
    return json.loads(path.read_text()) if path.is_file() else None


@pytest.mark.parametrize(
    "moment",
    [
        ("vlmscope.cli:build_parser", "enter", 1),  # before the parser
        ("vlmscope.commands.lens:register", "enter", 1),  # while the command modules are imported
        ("vlmscope.models.loading:load_model", "enter", 1),  # while the model loads
        ("vlmscope.scope:Scope.generate", "enter", 1),  # during the run
        ("vlmscope.methods.masking:mask_impact", "return", 1),  # results computed, not written
    ],
    ids=["parser", "imports", "load", "run", "before-writing"],
)
def test_ctrl_c_before_the_output_is_complete_is_one_line_and_130(tmp_path, moment):
    out = tmp_path / "mask"
    done = run_interrupted([*MASK, "--out", out], [moment])
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [LINE]
    marker = _marker(out)
    assert marker is None or marker["complete"] is False  # never marked complete, never half a run


@pytest.mark.parametrize(
    "moment",
    [("vlmscope.commands:finish_out_dir", "return", 1), ("atexit", "", 0)],
    ids=["after-marking-complete", "interpreter-shutdown"],
)
def test_ctrl_c_after_the_output_is_complete_leaves_it_and_exits_0(tmp_path, moment):
    out = tmp_path / "mask"
    done = run_interrupted([*MASK, "--out", out], [moment])
    assert done.returncode == 0, done.stderr
    assert LINE not in done.stderr and "Traceback" not in done.stderr
    assert _marker(out) == {"command": "mask", "complete": True}
    assert (out / "result.json").is_file()


@pytest.fixture(scope="module")
def shapes_csv(tmp_path_factory):
    return export_vqa(8, tmp_path_factory.mktemp("data"), seed=7)


EXTRACT = ["--checkpoint-every", "2", "--batch-size", "1", "--max-new-tokens", "2", "--device", "cpu", "--no-progress"]


def test_ctrl_c_in_extract_keeps_finished_parts_and_resumes_to_the_same_store(tmp_path, shapes_csv):
    from test_extract import _same_store

    out, whole = tmp_path / "out", tmp_path / "whole"
    # the third row's batch: part 0 (rows 0-1) is queued for writing, part 1 is in progress
    done = run_interrupted(
        ["extract", shapes_csv, *EXTRACT, "--out", out], [("vlmscope.extraction.runner:compute", "enter", 3)]
    )
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{LINE}: 1 finished parts kept") and "--resume" in lines[0]
    assert sorted(finished_parts(out)) == [0]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # the part in progress is discarded
    resumed = run_interrupted(["extract", shapes_csv, *EXTRACT, "--out", out, "--resume"], [])
    assert resumed.returncode == 0 and "complete, 8 rows" in resumed.stdout, resumed.stderr
    assert run_interrupted(["extract", shapes_csv, *EXTRACT, "--out", whole], []).returncode == 0
    _same_store(out, whole)


def test_a_second_ctrl_c_during_cleanup_still_gives_one_line(tmp_path, shapes_csv):
    out = tmp_path / "out"
    moments = [
        ("vlmscope.extraction.runner:compute", "enter", 3),
        ("vlmscope.store.writer:StoreWriter.close", "enter", 1),  # the cleanup after the first Ctrl-C
    ]
    done = run_interrupted(["extract", shapes_csv, *EXTRACT, "--out", out], moments)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [LINE]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ctrl_c_stops_the_app_with_one_line_and_130():
    import os

    env = {**os.environ, "VLMSCOPE_TEST_INTERRUPTS": "[]", "PYTHONUNBUFFERED": "1"}
    port = _free_port()
    app = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "app", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert app.stdout is not None
        first = app.stdout.readline()  # the chosen moment: printed once the app is serving
        assert "(Ctrl-C to stop)" in first, first
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        app.send_signal(signal.SIGINT)
        _, err = app.communicate(timeout=60)
    finally:
        app.kill()
    assert app.returncode == 130, err
    assert err.strip().splitlines() == [LINE]
