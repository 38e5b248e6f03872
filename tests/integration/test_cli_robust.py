"""The bad inputs and interruptions a single-image command meets: one line, exit 2 (or 130),
checked before the model loads where possible, and never a mix of two runs in one folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmscope
from vlmscope import Example, VlmscopeError
from vlmscope.cli import main

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
COMMANDS = {
    "capture": ["capture", "--prompt", "What colour is the square?", "--sites", "llm.layers.0"],
    "attention": ["attention", "--prompt", "What colour is the square?", "--max-new-tokens", "2", "--formats", "npz"],
    "run": ["run", "--prompt", "What colour is the square?", "--max-new-tokens", "2", "--methods", "raw"],
    "mask": ["mask", "--prompt", "What colour is the square?", "--max-new-tokens", "2"],
}


def _one_line_error(capsys, code, expected: str):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_extreme_aspect_ratio_is_one_line(tmp_path, capsys, command):
    thin = tmp_path / "thin.png"
    Image.fromarray(np.zeros((3, 4000, 3), np.uint8)).save(thin)
    code = main([*COMMANDS[command], str(thin), "--out", str(tmp_path / "out")])
    _one_line_error(capsys, code, "aspect ratio under 200")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_naming_a_file_is_refused_before_the_model_loads(tmp_path, capsys, command):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    (tmp_path / "not-a-model").mkdir()  # loading it would fail: the --out check must come first
    code = main([*COMMANDS[command], IMG, "--out", str(target), "--model", str(tmp_path / "not-a-model")])
    _one_line_error(capsys, code, "is a file")


def test_bad_flags_are_one_line(tmp_path, capsys):
    _one_line_error(
        capsys,
        main([*COMMANDS["run"], IMG, "--out", str(tmp_path / "a"), "--methods", "raw,foo"]),
        "unknown map method 'foo'",
    )
    assert not (tmp_path / "a").exists()  # nothing written for a run that could not start
    _one_line_error(
        capsys,
        main([*COMMANDS["capture"], IMG, "--out", str(tmp_path / "b"), "--max-new-tokens", "0", "--generate"]),
        "--max-new-tokens must be >= 1",
    )
    _one_line_error(
        capsys,
        main([*COMMANDS["capture"], IMG, "--out", str(tmp_path / "c"), "--attn-implementation", "nope"]),
        "unknown attention implementation 'nope'; choose from eager",
    )


def test_model_directory_without_safetensors_is_one_line(tmp_path, capsys):
    src = Path(vlmscope.__file__).parent / "assets" / "shapes-model"
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (pickled / f.name).write_bytes(f.read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02not really")
    code = main([*COMMANDS["capture"], IMG, "--out", str(tmp_path / "o"), "--model", str(pickled)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no *.safetensors weights" in err and "found pytorch_model.bin" in err and "pickle" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        capsys,
        main([*COMMANDS["capture"], IMG, "--out", str(tmp_path / "p"), "--model", str(empty)]),
        "cannot load model",
    )


def test_a_second_run_into_the_same_folder_is_refused_then_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "maps"
    args = [*COMMANDS["attention"], IMG, "--out", str(out)]
    assert main(args) == 0
    (out / "stale_from_another_answer.png").write_bytes(b"x")
    _one_line_error(capsys, main(args), "holds the output of an earlier run (vlmscope attention)")
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "stale_from_another_answer.png").exists()
    assert json.loads((out / "vlmscope-output.json").read_text()) == {"command": "attention", "complete": True}
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    _one_line_error(
        capsys, main([*COMMANDS["attention"], IMG, "--out", str(foreign), "--overwrite"]), "holds no vlmscope output"
    )
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_yaml_with_a_repeated_run_name_is_refused(tmp_path, capsys):
    config = tmp_path / "runs.yaml"
    config.write_text(f"runs:\n  - {{name: a, image: {IMG}, prompt: hi}}\n  - {{name: a, image: {IMG}, prompt: ho}}\n")
    _one_line_error(
        capsys,
        main(["mask", "--config", str(config), "--out", str(tmp_path / "o")]),
        "run name 'a' appears more than once",
    )


def test_a_prompt_string_is_a_text_only_example_and_api_misuse_is_clear():
    scope = vlmscope.load(device="cpu")
    trace = scope.forward("What?", "llm.layers.0", tokens="query")
    assert trace["llm.layers.0"][0].shape == (1, scope.adapter.text_config.hidden_size)
    with pytest.raises(VlmscopeError, match="expected an Example, a prompt string or a list of them, got int"):
        scope.forward(3, "llm.layers.0")
    with pytest.raises(VlmscopeError, match="max_new_tokens must be a whole number >= 1, got 0"):
        scope.generate(Example("hi"), max_new_tokens=0)
