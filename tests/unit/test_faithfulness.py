"""Faithfulness scoring: pointing, AUC, batched curves against one full forward per variant."""

from __future__ import annotations

import numpy as np
import torch
from conftest import random_image

from vlmscope import Example
from vlmscope.capture.attention import intervening
from vlmscope.capture.knockout import Knockout
from vlmscope.methods import Answer, explain
from vlmscope.methods.faithfulness import (
    BoxItem,
    auc,
    batched_curves,
    centre_map,
    curve_members,
    curve_steps,
    evaluate,
    pointing_hit,
    shapes_items,
    spatial_entropy,
)
from vlmscope.methods.masking.prefix import clean_run
from vlmscope.tokenmap import Visual


def _visual():
    return Visual("image", 0, [(0, 9)], (1, 6, 6), (1, 3, 3), (96, 96), (96, 96), 16, 2)


def test_pointing_hit_uses_the_top_token_centre():
    boxes = _visual().token_boxes()  # 3x3 tokens of 32 px
    scores = np.zeros(9)
    scores[5] = 1  # row 1, col 2: centre (80, 48)
    assert pointing_hit(scores, boxes, (70, 40, 90, 60))
    assert not pointing_hit(scores, boxes, (0, 0, 30, 30))
    assert pointing_hit(scores, boxes, (0, 40, 66, 60))  # within half a token of the box


def test_centre_map_peaks_in_the_middle_and_auc():
    c = centre_map(_visual())
    assert int(np.argmax(c)) == 4 and np.allclose(c[0], c[8])
    assert auc(np.array([0, 0.5, 1.0]), np.array([1.0, 1.0, 1.0])) == 1.0


def _unbatched(scope, answer, orders, steps):
    """The reference: one full forward of the whole model (vision tower included) per variant."""
    tm = answer.token_map
    ks = curve_steps(len(tm.vision_positions()), steps)
    members = curve_members(tm, orders, ks)
    batch = answer.batch(scope)
    out = []
    for row in members:
        editor = Knockout(row[None].to(scope.input_device), torch.ones(tm.length, dtype=torch.bool), None)
        with torch.no_grad(), intervening(editor):
            logits = scope.model(**batch.inputs, use_cache=False).logits[0, tm.query].float()
        out.append(torch.softmax(logits, -1)[answer.ids[0]].item())
    return np.array(out).reshape(len(orders), 2, len(ks))


def test_batched_curves_equal_one_forward_per_variant(scopes, family):
    scope = scopes[family]
    ex = Example("What colour is the circle?", images=[random_image(64, 96, 3)])
    maps = explain(scope, ex, max_new_tokens=2)
    answer = Answer.of_ids(scope, ex, maps.token_ids)
    rng = np.random.default_rng(0)
    n = len(answer.token_map.vision_positions())
    orders = [np.argsort(-maps.maps[0]), rng.permutation(n)]
    ctx = clean_run(scope, scope.prepare(answer.prompt, with_answers=False), answer.ids)
    x, deletion, insertion = batched_curves(ctx, orders, steps=3, batch_size=5)  # chunks of 5 variants
    ref = _unbatched(scope, answer, orders, steps=3)
    np.testing.assert_allclose(deletion, ref[:, 0], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(insertion, ref[:, 1], rtol=2e-4, atol=1e-6)
    with torch.no_grad():
        logits = scope.model(**scope.prepare(ex).inputs).logits[0, -1]
    clean = torch.softmax(logits.float(), -1)[answer.ids[0]].item()
    assert x[0] == 0 and x[-1] == 1
    np.testing.assert_allclose(deletion[:, 0], clean, rtol=1e-4)  # nothing removed
    np.testing.assert_allclose(insertion[:, -1], clean, rtol=1e-4)  # everything kept
    assert abs(deletion[0, -1] - insertion[1, 0]) < 1e-6  # both: every vision token knocked out


def test_spatial_entropy_bounds():
    assert spatial_entropy(np.eye(9)[3]) == 0.0
    assert abs(spatial_entropy(np.ones(9)) - 1.0) < 1e-12
    assert 0 < spatial_entropy(np.array([3.0, 1, 0, 0])) < 1


def test_evaluate_runs_and_reports_every_method(scopes, tmp_path):
    result = evaluate(scopes["qwen3_vl"], n=3, steps=2, methods=("raw", "rollout"), heads="0.1,1.0")
    keys = {(r["method"], r["layers"], r["heads"]) for r in result.rows}
    assert {("raw", "all", "all"), ("raw", "first half", "all"), ("rollout", "all", "all")} <= keys
    assert {("random", "-", "-"), ("centre", "-", "-"), ("raw", "heads' layers", "0.1,1.0")} <= keys
    for r in result.rows:
        p = r["pointing"]
        assert p["n"] == 3 and p["lo"] <= p["mean"] <= p["hi"]
        hits = result.scores(r["key"], "pointing")
        assert p["mean"] == np.mean(hits)
    # a paired difference is the mean of per-question differences
    c = result.comparisons[0]
    diff = result.scores(c["map"], "deletion") - result.scores(c["against"], "deletion")
    assert np.isclose(c["deletion"]["mean"], diff.mean())
    assert result.settings["seed"] == 1000 and "| method |" in result.table()
    # shapes questions: the object each answer relies on, and pointing at it
    assert result.reliance["all"]["n"] == 3 and "relies on" in result.table()
    for e in result.per_example:
        rel = e["reliance"]
        assert len(rel["kl"]) >= 1 and rel["relied"] == int(np.argmax(rel["kl"]))
        if rel["relied"] == rel["asked"]:
            assert all(s["pointing_relied"] == s["pointing"] for s in e["scores"].values())
    on = np.array([e["reliance"]["relied"] == e["reliance"]["asked"] for e in result.per_example])
    for r in result.rows:
        diff = result.scores(r["key"], "pointing") - on
        assert np.isclose(r["pointing_minus_reliance"]["mean"], diff.mean())
    written = result.save(tmp_path / "e.json")
    assert set(written) == {"json", "markdown", "plot"}
    assert all((tmp_path / f"e.{ext}").stat().st_size > 0 for ext in ("json", "md", "png"))


def test_items_without_a_scene_are_scored_without_reliance(scopes):
    items = [BoxItem(it.id, it.example, it.box, it.answer, it.kind) for it in shapes_items(2, seed=3)]
    result = evaluate(scopes["qwen2_vl"], steps=1, methods=("raw",), items=items)
    assert result.reliance == {} and all(e["reliance"] is None for e in result.per_example)
    assert "relies on" not in result.table() and "relies" not in result.summary()
    assert "pointing_relied" not in result.rows[0]
