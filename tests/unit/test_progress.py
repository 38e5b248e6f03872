"""Progress bars on every long job: rate and ETA on a terminal, silent off a terminal and with
--no-progress (before or after the command)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

import vlmscope
from vlmscope import progress as progress_mod
from vlmscope.assets import bundled_model_dir
from vlmscope.cli import main

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
needs_model = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_api_shows_rate_and_eta_only_on_a_terminal(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert list(progress_mod.progress(range(3), desc="job", unit="row")) == [0, 1, 2]
    assert "job" in term.getvalue() and "row/s" in term.getvalue() and "<" in term.getvalue()  # rate, ETA
    term.seek(0), term.truncate()
    with progress_mod.quiet():
        list(progress_mod.progress(range(3), desc="job"))
    assert term.getvalue() == ""
    pipe = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", pipe)
    list(progress_mod.progress(range(3), desc="job"))
    assert pipe.getvalue() == ""


@pytest.fixture(scope="module")
def shapes_scope():
    return vlmscope.load(device="cpu")


def _run(monkeypatch, tmp_path, stderr, *flags):
    """`vlmscope [flags] run ... [flags]` with two methods, the model loaded once per module."""
    monkeypatch.setattr(sys, "stderr", stderr)
    argv = [
        "run",
        IMG,
        "--prompt",
        "What colour is the square?",
        "--methods",
        "raw,gradient",
        "--max-new-tokens",
        "3",
        "--lens",
        "none",
        "--out",
        str(tmp_path / f"o{len(list(tmp_path.iterdir()))}"),
    ]
    return main([*flags[:1], *argv, *flags[1:]])


@needs_model
def test_run_shows_bars_on_a_terminal_only(shapes_scope, monkeypatch, tmp_path):
    import vlmscope.commands.run as run_cmd

    monkeypatch.setattr(run_cmd, "load_from_args", lambda args: shapes_scope)
    term = FakeTerminal()
    assert _run(monkeypatch, tmp_path, term) == 0
    shown = term.getvalue()
    assert "maps" in shown and "method/s" in shown and "gradient" in shown and "token/s" in shown, shown
    for flags in [("--no-progress",), ("--no-progress", "--no-progress")]:  # before the command; and after it
        term = FakeTerminal()
        assert _run(monkeypatch, tmp_path, term, *flags) == 0
        assert term.getvalue() == ""
    pipe = io.StringIO()
    assert _run(monkeypatch, tmp_path, pipe) == 0
    assert pipe.getvalue() == ""
    assert progress_mod.showing() or not sys.stderr.isatty()  # --no-progress does not outlive the command


@needs_model
def test_masking_shows_units_and_the_yaml_batch_shows_runs(shapes_scope, monkeypatch, tmp_path):
    import vlmscope.commands.mask as mask_cmd

    monkeypatch.setattr(mask_cmd, "load_from_args", lambda args, model=None: shapes_scope)
    config = tmp_path / "runs.yaml"
    config.write_text(
        f"runs:\n  - name: a\n    image: {IMG}\n    prompt: What colour is the square?\n    max_new_tokens: 2\n"
    )
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["mask", "--config", str(config), "--out", str(tmp_path / "m")]) == 0
    assert "mask runs" in term.getvalue() and "run/s" in term.getvalue()
    assert "masking" in term.getvalue() and "unit/s" in term.getvalue()
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["mask", "--config", str(config), "--out", str(tmp_path / "m"), "--overwrite", "--no-progress"]) == 0
    assert term.getvalue() == ""
