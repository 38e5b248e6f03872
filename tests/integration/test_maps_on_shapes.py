"""On the bundled shapes model the maps point at the object the question is about."""

from __future__ import annotations

import numpy as np
import pytest

from vlmscope.assets import bundled_model_dir

pytestmark = pytest.mark.skipif(bundled_model_dir() is None, reason="the bundled shapes model is not installed")


@pytest.fixture(scope="module")
def shapes_scope():
    import vlmscope

    return vlmscope.load(device="cpu")


def test_raw_attention_points_at_the_asked_object(shapes_scope):
    from vlmscope import Example
    from vlmscope.data.shapes import make_dataset
    from vlmscope.methods import explain
    from vlmscope.methods.faithfulness import pointing_hit

    records = [r for r in make_dataset(60, seed=4242) if r.box is not None][:20]
    hits, chance = [], []
    for rec in records:
        maps = explain(shapes_scope, Example(rec.question, images=[rec.image]), max_new_tokens=2)
        boxes = maps.token_map.visuals[0].token_boxes()
        hits.append(pointing_hit(maps.maps[0], boxes, rec.box))
        # the hit rate of a map whose maximum falls on a uniformly random token
        chance.append(np.mean([pointing_hit(np.eye(len(boxes))[j], boxes, rec.box) for j in range(len(boxes))]))
    # a random map hits with probability mean(chance) per record (0.17 here; raw maps measured 0.85)
    assert np.mean(hits) >= np.mean(chance) + 0.35, (np.mean(hits), np.mean(chance))


def _first_token_logp(scope, example):
    import torch

    with torch.no_grad():
        logits = scope.model(**scope.prepare(example).inputs).logits[0, -1]
    return torch.log_softmax(logits.float(), -1)


def test_reliance_equals_a_full_forward_on_each_scene_without_one_object(shapes_scope):
    from vlmscope import Example
    from vlmscope.methods import Answer
    from vlmscope.methods.faithfulness import shapes_items
    from vlmscope.methods.faithfulness.reliance import reliance
    from vlmscope.methods.masking.prefix import clean_run

    items = [it for it in shapes_items(40, seed=7) if len(it.scene.objects) >= 3]
    for item in items[:2]:
        answer = Answer.resolve(shapes_scope, item.example, max_new_tokens=2)
        ctx = clean_run(shapes_scope, shapes_scope.prepare(answer.prompt, with_answers=False), answer.ids)
        rel = reliance(shapes_scope, item, answer, ctx.clean_logp[0])
        clean = _first_token_logp(shapes_scope, item.example)
        ref = []
        for i in range(len(item.scene.objects)):
            erased = _first_token_logp(shapes_scope, Example(item.example.prompt, images=[item.scene.without(i)]))
            ref.append(float((clean.exp() * (clean - erased)).sum()))
        assert max(ref) > 0.05  # the bundled model reacts to losing an object
        np.testing.assert_allclose(rel.kl, ref, rtol=1e-3, atol=1e-5)
        assert rel.relied == int(np.argmax(ref))
        assert tuple(float(v) for v in item.scene.objects[rel.asked].box) == item.box


def test_colour_answers_rely_on_the_asked_object(shapes_scope):
    """Ground truth of the scenes: the colour of the one circle depends on that circle, not on the
    other objects (the bundled model answers these questions right on held-out data)."""
    from vlmscope.methods import Answer
    from vlmscope.methods.faithfulness import shapes_items
    from vlmscope.methods.faithfulness.reliance import reliance
    from vlmscope.methods.masking.prefix import clean_run

    items = [it for it in shapes_items(60, seed=11) if it.kind == "colour_of_shape" and len(it.scene.objects) >= 2]
    assert len(items) >= 5
    for item in items[:5]:
        answer = Answer.resolve(shapes_scope, item.example, max_new_tokens=2)
        ctx = clean_run(shapes_scope, shapes_scope.prepare(answer.prompt, with_answers=False), answer.ids)
        rel = reliance(shapes_scope, item, answer, ctx.clean_logp[0])
        assert rel.on_asked, (item.example.prompt, rel)


def test_heads_are_scored_against_the_object_the_answer_relies_on(shapes_scope):
    """`discover(target="relied")` scores every head against the object whose erasure moves the
    first answer token most, found here by plain forwards on each erased scene."""
    from vlmscope import Example
    from vlmscope.methods.faithfulness import pointing_hit, shapes_items
    from vlmscope.methods.heads import discover, head_maps

    items = shapes_items(12, seed=1000)[8:12]  # held-out questions; one answer relies on another object
    expected_hits, asked_hits, on_asked = [], [], []
    for item in items:
        maps, boxes, _ = head_maps(shapes_scope, item)
        clean = _first_token_logp(shapes_scope, item.example)
        kl = []
        for i in range(len(item.scene.objects)):
            erased = _first_token_logp(shapes_scope, Example(item.example.prompt, images=[item.scene.without(i)]))
            kl.append(float((clean.exp() * (clean - erased)).sum()))
        relied = tuple(float(v) for v in item.scene.objects[int(np.argmax(kl))].box)
        on_asked.append(relied == item.box)
        expected_hits.append([[pointing_hit(m, boxes, relied) for m in layer] for layer in maps])
        asked_hits.append([[pointing_hit(m, boxes, item.box) for m in layer] for layer in maps])
    assert not all(on_asked), "the test needs an answer that relies on another object"
    expected = np.array(expected_hits, float).mean(0)
    assert not np.allclose(expected, np.array(asked_hits, float).mean(0))  # the two targets score differently
    ranking = discover(shapes_scope, items, target="relied")
    assert ranking.settings["relied_on_asked"] == np.mean(on_asked)
    for h in ranking.heads:
        assert h["pointing"]["mean"] == pytest.approx(expected[h["layer"], h["head"]]), h
