"""Faithfulness scoring: pointing, AUC, curve endpoints against the clean model."""

from __future__ import annotations

import numpy as np
import torch

from vlmscope import Example
from vlmscope.methods import Answer, explain
from vlmscope.methods.faithfulness import auc, centre_map, curve_probs, evaluate, pointing_hit
from vlmscope.tokenmap import Visual

from conftest import random_image


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


def test_curve_endpoints_equal_the_clean_model(scopes, family):
    scope = scopes[family]
    ex = Example("What colour is the circle?", images=[random_image(64, 96, 3)])
    maps = explain(scope, ex, max_new_tokens=2)
    tm, ids = maps.token_map, maps.token_ids
    order = np.argsort(-maps.maps[0])
    x, deletion, insertion = curve_probs(scope, Answer.of_ids(scope, ex, ids), order, steps=3)
    with torch.no_grad():
        logits = scope.model(**scope.prepare(ex).inputs).logits[0, -1]
    clean = torch.softmax(logits.float(), -1)[ids[0]].item()
    assert x[0] == 0 and x[-1] == 1
    np.testing.assert_allclose([deletion[0], insertion[-1]], [clean, clean], rtol=1e-4)
    assert abs(deletion[-1] - insertion[0]) < 1e-6  # both: every vision token knocked out


def test_evaluate_runs_and_reports_every_method(scopes):
    result = evaluate(scopes["qwen3_vl"], n=2, steps=2, methods=("raw", "rollout"))
    methods = {(r["method"], r["layers"]) for r in result.rows}
    assert {("raw", "all"), ("raw", "first half"), ("rollout", "all"), ("random", "-"), ("centre", "-")} <= methods
    assert all(0 <= r["pointing"] <= 1 and r["n"] == 2 for r in result.rows)
    assert "| method |" in result.table()
