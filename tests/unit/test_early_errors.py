"""A user's mistake in any command is one line and exit 2 before a model loads, and leaves no
output folder behind; ranges that need the model's depth are checked right after it loads."""

from __future__ import annotations

from pathlib import Path

import pytest

import vlmscope
import vlmscope.models.loading
import vlmscope.scope
from vlmscope.assets import bundled_model_dir
from vlmscope.cli import main

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
P = ["--prompt", "What colour is the square?"]

CASES = {
    "run: unknown method": (["run", IMG, *P, "--methods", "raw,foo"], "unknown map method 'foo'"),
    "run: missing model directory": (["run", IMG, *P, "--model", "./no-such-model"], "model directory not found"),
    "run: dtype": (["run", IMG, *P, "--dtype", "float8"], "unknown --dtype 'float8'"),
    "run: device": (["run", IMG, *P, "--device", "gpu7"], "unknown --device 'gpu7'"),
    "run: device map": (["run", IMG, *P, "--device-map", "everywhere"], "unknown --device-map 'everywhere'"),
    "run: pixels": (["run", IMG, *P, "--max-pixels", "0"], "--max-pixels must be >= 1"),
    "run: missing image": (["run", "nope.png", *P], "image not found: 'nope.png'"),
    "capture: site": (["capture", IMG, *P, "--sites", "llm.layers,llm.nope"], "unknown site 'llm.nope'"),
    "capture: layer syntax": (["capture", IMG, *P, "--layers", "first"], "bad layer spec 'first'"),
    "capture: fraction": (["capture", IMG, *P, "--layers", "n/0"], "fraction 'n/0'"),
    "capture: fraction over n": (["capture", IMG, *P, "--layers", "5n/4:"], "fraction '5n/4'"),
    "capture: range going down": (["capture", IMG, *P, "--layers", "3:1"], "selects no layers"),
    "capture: tokens": (["capture", IMG, *P, "--tokens", "pixels"], "unknown token selection 'pixels'"),
    "capture: reduce": (["capture", IMG, *P, "--reduce", "sum"], "unknown reduction 'sum'"),
    "attention: heads": (["attention", IMG, *P, "--heads", "x"], "bad head spec 'x'"),
    "attention: tokens": (["attention", IMG, *P, "--tokens", "a,b"], "bad generated token spec 'a,b'"),
    "attention: format": (["attention", IMG, *P, "--formats", "gif"], "unknown format 'gif'"),
    "mask: mode": (["mask", IMG, *P, "--mode", "audio"], "unknown mask mode 'audio'"),
    "mask: window": (["mask", IMG, *P, "--window", "0"], "bad window '0'"),
    "mask: perturbation": (["mask", IMG, *P, "--perturbation", "blur"], "unknown perturbation 'blur'"),
    "mask: edges": (["mask", IMG, *P, "--edges", "first"], "unknown edge set first"),
    "mask: layers": (["mask", IMG, *P, "--layers", "2-1"], "selects no layers"),
    "lens show: layers": (["lens", "show", IMG, *P, "--layers", "top"], "bad layer spec 'top'"),
    "lens show: k": (["lens", "show", IMG, *P, "--k", "0"], "--k must be >= 1"),
    "lens show: contextual": (["lens", "show", IMG, *P, "--kind", "contextual"], "needs --index"),
    "lens show: index": (["lens", "show", IMG, *P, "--kind", "contextual", "--index", "nope"], "index directory"),
    "lens stats: source": (["lens", "stats", "nope-dir"], "does not exist"),
    "lens stats: layers": (["lens", "stats", IMG, "--layers", "x"], "bad layer spec 'x'"),
    "lens index: captions": (["lens", "index", "nope.txt", "--layers", "all"], "caption file not found"),
    "lens index: layers": (["lens", "index", IMG, "--layers", "n/"], "bad layer spec 'n/'"),
    "extract: layers": (["extract", IMG, "--layers", "x"], "bad layer spec 'x'"),
    "extract: batch size": (["extract", IMG, "--batch-size", "0"], "--batch-size must be >= 1"),
    "inspect: dtype": (["inspect", "--dtype", "int4"], "unknown --dtype 'int4'"),
    "inspect: attention": (["inspect", "--attn-implementation", "fast"], "unknown attention implementation 'fast'"),
    "shapes: n": (["shapes", "--n", "0"], "--n must be at least 1"),
    "heads: relied on a CSV": (
        ["heads", "--source", "q.csv", "--target", "relied"],
        "--target relied needs --source shapes",
    ),
}


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(vlmscope.scope, "load", refuse)
    monkeypatch.setattr(vlmscope.models.loading, "load_model", refuse)


@pytest.mark.parametrize("case", list(CASES))
def test_mistakes_fail_before_the_model_loads(case, no_model, tmp_path, capsys):
    argv, expected = CASES[case]
    out = tmp_path / "out"
    code = main([*argv, *(["--out", str(out)] if argv[0] != "inspect" else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_a_mask_batch_whose_runs_all_fail_loads_no_model(no_model, tmp_path, capsys):
    config = tmp_path / "runs.yaml"
    config.write_text(
        "runs:\n  - name: a\n    image: nope.png\n    prompt: Colour?\n"
        "  - name: b\n    image: nope.png\n    prompt: Colour?\n    window: 0\n"
    )
    assert main(["mask", "--config", str(config), "--out", str(tmp_path / "out")]) == 1
    printed = capsys.readouterr().out
    assert "image not found" in printed and "bad window 0" in printed and "0 of 2 runs done" in printed


@pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")
def test_ranges_are_checked_against_the_loaded_model_and_leave_no_folder(tmp_path, capsys):
    out = tmp_path / "out"  # the bundled model has 4 layers and 4 heads
    for argv, expected in [
        (["capture", IMG, *P, "--layers", "4"], "layer 4 out of range in '4': the model has 4 layers (0..3)"),
        (["attention", IMG, *P, "--heads", "0,7", "--max-new-tokens", "2"], "head 7 out of range"),
        (["mask", IMG, *P, "--layers", "-5", "--max-new-tokens", "2"], "layer -5 out of range"),
    ]:
        code = main([*argv, "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
        assert not out.exists()


def test_a_hub_id_with_dots_is_not_taken_for_a_missing_directory(no_model, tmp_path, capsys):
    with pytest.raises(AssertionError, match="a model was loaded"):  # reaches the loader: no early error
        main(["inspect", "--model", "Qwen/Qwen2.5-VL-3B-Instruct"])
