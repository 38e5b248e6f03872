"""Every map method is reachable through the registry and gives the maps the code gave before
the methods shared one interface (values saved in tests/data/maps_before_refactor.npz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmscope
from vlmscope import Example, VlmscopeError
from vlmscope.assets import HERE
from vlmscope.methods import MAP_METHODS, Answer, MapMethod, explain, map_method, mask_impact
from vlmscope.models.tiny import build_tiny_model, build_tokenizer

SAVED = np.load(Path(__file__).parents[1] / "data" / "maps_before_refactor.npz")
TOL = dict(rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def bundled():
    return vlmscope.load(device="cpu", dtype="float32")


def _shapes_example(k: int) -> Example:
    name = ["shapes_demo", "shapes_demo_2"][k]
    meta = json.loads((HERE / "examples" / f"{name}.json").read_text())
    return Example(meta["question"], images=[str(HERE / "examples" / meta["image"])])


def test_registry_lists_every_method_and_refuses_unknown_ones():
    assert list(MAP_METHODS) == ["raw", "rollout", "gradient", "masking", "windows"]
    assert all(issubclass(m, MapMethod) and m.name == name and m.summary for name, m in MAP_METHODS.items())
    with pytest.raises(
        VlmscopeError, match="unknown map method 'foo'; choose from raw, rollout, gradient, masking, windows"
    ):
        map_method("foo")
    with pytest.raises(VlmscopeError, match="bad option for map method 'rollout'"):
        map_method("rollout", layer_agg="max")


@pytest.mark.parametrize("k", [0, 1])
def test_every_method_reproduces_the_saved_maps_on_the_bundled_model(bundled, k):
    ex = _shapes_example(k)
    answer = Answer.resolve(bundled, ex, max_new_tokens=4, capture=map_method("raw").capture_plan(bundled))
    np.testing.assert_array_equal(answer.ids, SAVED[f"{k}/answer_ids"])
    for name in [m for m in MAP_METHODS if f"{k}/{m}" in SAVED.files]:  # methods older than the refactor
        result = map_method(name).attribute(bundled, ex, answer)
        np.testing.assert_allclose(result.maps, SAVED[f"{k}/{name}"], **TOL, err_msg=name)
    raw = map_method("raw").attribute(bundled, ex, answer)
    np.testing.assert_allclose(raw.layer_maps, SAVED[f"{k}/raw_layer_maps"], **TOL)
    narrow = explain(bundled, ex, "raw", max_new_tokens=4, layers="2:", heads="0,1", head_agg="max")
    np.testing.assert_allclose(narrow.maps, SAVED[f"{k}/raw_l2_h01_max"], **TOL)
    text = map_method("rollout", keep_text=True).attribute(bundled, ex, answer)
    np.testing.assert_allclose(text.text_maps, SAVED[f"{k}/rollout_text"], **TOL)


@pytest.mark.parametrize("k", [0, 1])
def test_masking_perturbations_reproduce_the_saved_scores(bundled, k):
    ex = _shapes_example(k)
    ids = SAVED[f"{k}/answer_ids"].tolist()
    for kind in ("zero", "mean", "noise", "occlude"):
        r = mask_impact(bundled, ex, answer_ids=ids, mode="vision", perturbation=kind)
        np.testing.assert_allclose(r.delta_logprob, SAVED[f"{k}/mask_{kind}"], **TOL, err_msg=kind)
    r = mask_impact(bundled, ex, answer_ids=ids, mode="both", window=2, text_unit="word", layers="0-1", edges="last")
    np.testing.assert_allclose(r.delta_logprob, SAVED[f"{k}/mask_both_w2"], **TOL)
    np.testing.assert_allclose(r.kl, SAVED[f"{k}/mask_both_w2_kl"], **TOL)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_every_method_reproduces_the_saved_maps_on_tiny_models(tmp_path, family):
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 255, (84, 112, 3), dtype=np.uint8))
    scope = vlmscope.load(
        build_tiny_model(family, tmp_path / "m", tokenizer=build_tokenizer(), seed=3), device="cpu", dtype="float32"
    )
    ex = Example("What colour is the circle?", images=[img], answer="red circle")
    answer = Answer.resolve(scope, ex)
    np.testing.assert_array_equal(answer.ids, SAVED[f"{family}/answer_ids"])
    for name in [m for m in MAP_METHODS if f"{family}/{m}" in SAVED.files]:
        got = map_method(name).attribute(scope, ex, answer).maps
        np.testing.assert_allclose(got, SAVED[f"{family}/{name}"], **TOL, err_msg=name)
    r = mask_impact(scope, Example(ex.prompt, images=[img]), answer_ids=answer.ids, perturbation="zero")
    np.testing.assert_allclose(r.delta_logprob, SAVED[f"{family}/mask_zero"], **TOL)
