"""Early stop, hook hygiene, videos, capture dtypes."""

from __future__ import annotations

import pytest
import torch

from vlmscope import CapturePlan, Example

from conftest import random_image


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_early_stop_skips_later_layers(scopes, family, images):
    scope = scopes[family]
    layers = scope.adapter.language_model.layers
    last, h1 = _count_calls(layers[-1])
    first, h2 = _count_calls(layers[0])
    head, h3 = _count_calls(scope.adapter.lm_head)
    try:
        trace = scope.forward(Example("hi", images=images[:1]), ["llm.layers.0"])
        assert trace.stopped_early and first == [1] and last == [] and head == []
        trace = scope.forward(Example("hi", images=images[:1]), ["llm.layers.0"], early_stop=False)
        assert not trace.stopped_early and last == [1] and head == [1]
    finally:
        for h in (h1, h2, h3):
            h.remove()


def test_vision_only_plan_stops_before_the_decoder(scopes, images):
    scope = scopes["qwen3_vl"]
    first, h = _count_calls(scope.adapter.language_model.layers[0])
    try:
        trace = scope.forward(Example("hi", images=images[:2]), ["vision.merger", "vision.deepstack"])
    finally:
        h.remove()
    assert first == [] and trace.stopped_early
    assert trace["vision.deepstack.0"][0].shape == trace["vision.merger"][0].shape


def test_hooks_removed_when_forward_raises(scopes, images):
    scope = scopes["qwen2_vl"]
    model = scope.model
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    boom = scope.adapter.language_model.layers[1].register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            scope.forward(Example("hi", images=images[:1]), ["llm.layers", "vision.blocks", "llm.layers.attn"])
    finally:
        boom.remove()
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert after == before
    # and the attention recorder is no longer active: a plain forward records nothing
    from vlmscope.capture.attention import _ACTIVE
    assert _ACTIVE.get() == ()


def test_video_frames_and_image_in_one_example(scopes, family):
    scope = scopes[family]
    frames = [random_image(64, 64, i) for i in range(4)]
    ex = Example("What happens?", images=[random_image(64, 96, 9)], videos=[frames])
    batch = scope.prepare(ex)
    tm = batch.token_maps[0]
    assert [v.kind for v in tm.visuals] == ["image", "video"]
    video = tm.visuals[1]
    assert video.merged_thw[0] == 2 and video.num_tokens == sum(e - s for s, e in video.segments)
    assert video.token_frames()[-1].tolist() == [2, 3]
    trace = scope.forward(batch, ["vision.merger", "vision.blocks.0"], tokens="image:1")
    with torch.no_grad():
        feats = scope.model.model.get_video_features(batch.inputs["pixel_values_videos"], batch.inputs["video_grid_thw"])
    feats = torch.cat(list(getattr(feats, "pooler_output", feats)))
    torch.testing.assert_close(trace["vision.merger"][0], feats)
    assert trace["vision.blocks.0"][0].shape[0] == video.num_patches


def test_text_only_and_dtype(scopes):
    scope = scopes["qwen2_5_vl"]
    trace = scope.forward(Example("Just text"), CapturePlan.of("llm.layers", layers="-1", tokens="query").add(
        "llm.embed", tokens="text", reduce="mean"), dtype=torch.float16)
    assert trace["llm.layers.2"][0].dtype == torch.float16 and trace["llm.layers.2"][0].shape == (1, 64)
    assert trace["llm.embed"][0].shape == (64,)
