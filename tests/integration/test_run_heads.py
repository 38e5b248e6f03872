"""`vlmscope run --heads`: the attention-based methods of the report read only the chosen heads."""

from __future__ import annotations

import pytest
from conftest import random_image

from vlmscope.cli import main
from vlmscope.report import _instance


def test_heads_reach_the_methods_that_read_heads_only():
    assert _instance("raw", False, "1.3,0.2").heads == "1.3,0.2"
    assert _instance("rollout", False, "1.3").heads == "1.3"
    assert _instance("masking", False, "1.3").heads == "all"  # knockout reads no head
    assert _instance("raw", False).heads == "all"


@pytest.mark.parametrize("heads", ["1.x", "nonsense.json"])
def test_bad_heads_fail_before_the_model_loads(heads, tmp_path, capsys, monkeypatch):
    import vlmscope.models.loading
    import vlmscope.scope

    refuse = lambda *a, **k: pytest.fail("the model was loaded")  # noqa: E731
    monkeypatch.setattr(vlmscope.scope, "load", refuse)
    monkeypatch.setattr(vlmscope.models.loading, "load_model", refuse)
    img = tmp_path / "img.png"
    random_image(64, 64, 0).save(img)
    code = main(
        ["run", str(img), "--prompt", "What colour is the circle?", "--heads", heads, "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vlmscope: error:")
    assert not (tmp_path / "o").exists()


def test_heads_out_of_the_models_range_is_one_line_and_leaves_no_output(tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(64, 64, 0).save(img)
    code = main(
        [
            "run",
            str(img),
            "--prompt",
            "What colour is the circle?",
            "--heads",
            "9.0",
            "--methods",
            "raw",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("vlmscope: error: head 9.0 out of range")
    assert not (tmp_path / "o" / "report.html").exists()
