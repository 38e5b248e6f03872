"""A prompt longer than the model's context is refused with one line naming both lengths, before
the model runs, by every command and API entry (positions past the context were never trained:
such a run is silently wrong, and slow)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import vlmscope
from vlmscope import Example, VlmscopeError, explain
from vlmscope.cli import main
from vlmscope.methods.answer import Answer

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
LONG = "What colour is the square? " + "red " * 5000  # about 5,000 tokens against a context of 4,096
REFUSED = "longer than the model's context of 4096 tokens"


def _refused(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and REFUSED in err, err
    return err


@pytest.fixture
def model_never_runs(monkeypatch):
    """The refusal must come before any forward pass: a forward fails the test."""
    import torch

    def forbidden(*a, **k):
        raise AssertionError("the model ran on an over-long prompt")

    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden)


COMMANDS = {
    "capture": ["capture", IMG, "--sites", "llm.layers.0"],
    "attention": ["attention", IMG, "--formats", "npz"],
    "run": ["run", IMG, "--methods", "raw"],
    "mask": ["mask", IMG],
    "lens show": ["lens", "show", IMG],
    "compare": ["compare", IMG, "--model", "bundled", "--model", "PEER"],
}


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    from vlmscope.app.compare import peer_model

    return peer_model(tmp_path_factory.mktemp("peer") / "qwen2_5_vl")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_an_over_long_prompt(tmp_path, capsys, command, request):
    args = [str(request.getfixturevalue("peer")) if a == "PEER" else a for a in COMMANDS[command]]
    code = main([*args, "--prompt", LONG, "--out", str(tmp_path / "out"), "--no-progress"])
    _refused(capsys, code)


def test_evaluate_refuses_an_over_long_question(tmp_path, capsys):
    source = tmp_path / "boxes.csv"
    (tmp_path / "images").mkdir()
    Path(tmp_path / "images" / "demo.png").write_bytes(Path(IMG).read_bytes())
    with source.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "image", "question", "answer", "box_x0", "box_y0", "box_x1", "box_y1"])
        w.writerow(["q0", "demo.png", LONG, "red", 122, 4, 157, 39])
    code = main(["evaluate", "--source", str(source), "--methods", "raw", "--out", str(tmp_path / "e.json")])
    _refused(capsys, code)


@pytest.fixture(scope="module")
def bundled():
    return vlmscope.load(device="cpu")


def test_the_api_refuses_before_the_model_runs(bundled, model_never_runs):
    long_example = Example(LONG, images=[IMG])
    for call in (
        lambda: bundled.forward(long_example, "llm.layers.0"),
        lambda: bundled.generate(long_example),
        lambda: explain(bundled, Example(LONG, images=[IMG], answer="red")),
        lambda: Answer.of_ids(bundled, long_example, [5]),
    ):
        with pytest.raises(VlmscopeError, match=REFUSED):
            call()


def test_the_answer_budget_counts(bundled, model_never_runs):
    fits = Example("What colour is the square? " + "red " * 3990, images=[IMG])
    length = bundled.prepare(fits).token_maps[0].length
    assert length < 4096
    with pytest.raises(VlmscopeError, match=rf"{length} tokens \+ {4097 - length} to generate = 4097"):
        bundled.generate(fits, max_new_tokens=4097 - length)
    with pytest.raises(VlmscopeError, match=r"example 1: "):
        bundled.forward([Example("hi", images=[IMG]), Example(LONG)], "llm.layers.0")


def test_the_app_refuses_a_prompt_longer_than_a_small_context(bundled):
    from vlmscope.app.inputs import build_example
    from vlmscope.app.maps import capture_plan
    from vlmscope.app.stream import stream_answer

    short = vlmscope.load(device="cpu")
    short.model.config.text_config.max_position_embeddings = 64  # a small model's context
    example, _ = build_example("What colour is the square? " * 6, [IMG], None)
    with pytest.raises(VlmscopeError, match="longer than the model's context of 64 tokens"):
        list(stream_answer(short, example, capture_plan(short), 8))
