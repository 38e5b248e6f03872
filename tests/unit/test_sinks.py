"""Attention sinks are tokens that are high whatever is asked, not the object a short answer names."""

from __future__ import annotations

import numpy as np
import pytest

from vlmscope.assets import bundled_model_dir
from vlmscope.methods import sinks
from vlmscope.methods.sinks import detect_sinks, find_sinks

needs_model = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


def _rows(n: int, width: int, high: list[int], seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).uniform(0.5, 1.5, (n, width))
    rows[:, high] *= 20
    return rows / rows.sum(1, keepdims=True)


def test_a_sink_must_also_be_high_under_the_neutral_prompt():
    answer = _rows(2, 36, [3, 17], 0)  # a two-row answer: both columns pass the per-answer test
    neutral = _rows(20, 36, [3], 1)  # only column 3 is high for a prompt that asks nothing
    assert detect_sinks(answer) == [3, 17]
    found = find_sinks(answer, neutral)
    assert list(found) == [3]
    assert "vision token 3" in found[3] and "neutral prompt" in found[3] and "100%" in found[3]
    assert find_sinks(answer, neutral[:, ::-1]) == {}  # high elsewhere under the neutral prompt: no sink
    assert find_sinks(answer, np.zeros((0, 36))) == {}


def _on(box, token_box) -> bool:
    x0, y0, x1, y1 = token_box
    return not (x1 <= box[0] or x0 >= box[2] or y1 <= box[1] or y0 >= box[3])


@pytest.fixture(scope="module")
def shapes_scope():
    import vlmscope

    return vlmscope.load(device="cpu")


@needs_model
def test_no_excluded_token_lies_on_the_asked_object(shapes_scope):
    from vlmscope import Example
    from vlmscope.data.shapes import make_dataset
    from vlmscope.methods import explain

    records = [r for r in make_dataset(80, seed=777) if r.box is not None][:20]  # seed 777: never trained on
    old_rule_on_object = 0
    for rec in records:
        maps = explain(shapes_scope, Example(rec.question, images=[rec.image]), max_new_tokens=4, exclude_sinks=True)
        boxes = maps.token_map.visuals[0].token_boxes()
        assert sorted(maps.settings["sink_reasons"]) == maps.sinks
        assert not [c for c in maps.sinks if _on(rec.box, boxes[c])], (rec.question, maps.settings["sink_reasons"])
        raw = explain(shapes_scope, Example(rec.question, images=[rec.image]), max_new_tokens=4)
        old_rule_on_object += sum(_on(rec.box, boxes[c]) for c in detect_sinks(raw.maps))
    assert old_rule_on_object >= 1  # the answer-only rule removes the asked object on this set


@needs_model
def test_confirmed_sinks_are_zeroed_with_a_reason(shapes_scope, monkeypatch):
    from vlmscope import Example
    from vlmscope.methods import explain

    ex = Example("What colour is the square?", images=["src/vlmscope/assets/examples/shapes_demo.png"])
    plain = explain(shapes_scope, ex, max_new_tokens=4, layers="n/2:")
    target = int(plain.maps[0].argmax())
    calls = []

    def fake_neutral(scope, example, layers, heads):
        calls.append((layers, heads))
        return _rows(12, plain.maps.shape[1], [target], 2)

    monkeypatch.setattr(sinks, "neutral_rows", fake_neutral)
    monkeypatch.setattr(sinks, "detect_sinks", lambda m, *a: [target])  # a candidate in this answer
    maps = explain(shapes_scope, ex, max_new_tokens=4, exclude_sinks=True, layers="n/2:")
    assert maps.sinks == [target] and list(maps.settings["sink_reasons"]) == [target]
    assert calls == [([2, 3], list(range(shapes_scope.adapter.num_heads)))]
    assert np.all(maps.maps[:, target] == 0) and plain.maps[:, target].min() > 0
    np.testing.assert_allclose(maps.maps.sum(1), plain.maps.sum(1), rtol=1e-5)  # rows keep their mass
