"""`vlmscope compare` end to end: the bundled model against a tiny random Qwen2.5-VL that shares
its tokenizer (a different family with a different token grid)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vlmscope
from vlmscope import Example, explain
from vlmscope.cli import main

DEMO = str(Path(vlmscope.__file__).parent / "assets/examples/shapes_demo.png")
PROMPT = "What colour is the square?"


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    from vlmscope.app.compare import peer_model

    return peer_model(tmp_path_factory.mktemp("peer") / "qwen2_5_vl")


def test_compare_writes_one_report(peer, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", DEMO, "--prompt", PROMPT, "--model", "bundled", "--model", str(peer),
               "--same-answer", "--layers", "1-2", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "compare.json").read_text())
    page = (out / "compare.html").read_text()
    shapes = vlmscope.load(device="cpu")
    ref = explain(shapes, Example(PROMPT, images=[DEMO]), layers="1-2", max_new_tokens=16)
    assert data["answers"] == [ref.answer, ref.answer]
    assert [r["token"] for r in data["rows"]] == [ref.answer.strip().lower()]
    np.testing.assert_allclose(data["maps"][data["rows"][0]["token"]][0], ref.maps[0], rtol=1e-5, atol=1e-7)
    assert "shapes (bundled)" in page and "qwen2_5_vl" in page and "grid 1x6x6" in page and "grid 1x7x7" in page
    assert page.count("<img") == 2 and "data:image/" in page
    assert "teacher-forced. Each map" in page and "layers 1-2" in page and ">None<" not in page
    assert f"shapes (bundled): {ref.answer}" in capsys.readouterr().out
    assert json.loads((out / "vlmscope-output.json").read_text())["complete"] is True


def test_compare_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", DEMO, "--prompt", PROMPT, "--model", "bundled"]) == 2
    assert (
        main(["compare", DEMO, "--prompt", PROMPT, "--model", "a", "--model", "a", "--out", str(tmp_path / "x")]) == 2
    )
    assert main(["compare", str(tmp_path / "missing.png"), "--prompt", PROMPT, "--model", "a", "--model", "b"]) == 2
    assert (
        main(["compare", DEMO, "--prompt", PROMPT, "--model", "bundled", "--model", "bundled", "--layers", "x-y"]) == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 4 and all(line.startswith("vlmscope: error: ") for line in err)
