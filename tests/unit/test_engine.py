"""Early stop, hook hygiene, videos, capture dtypes."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

from vlmscope import CapturePlan, Example, VlmscopeError


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
    boom = scope.adapter.language_model.layers[1].register_forward_hook(
        lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
    )
    try:
        with pytest.raises(RuntimeError, match="boom"):
            scope.forward(Example("hi", images=images[:1]), ["llm.layers", "vision.blocks", "llm.layers.attn"])
    finally:
        boom.remove()
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert after == before
    # and the attention recorder is no longer active: a plain forward records nothing
    from vlmscope.capture.attention import _ACTIVE

    assert _ACTIVE.get()[0] == ()  # no intervention is left active


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
        feats = scope.model.model.get_video_features(
            batch.inputs["pixel_values_videos"], batch.inputs["video_grid_thw"]
        )
    feats = torch.cat(list(getattr(feats, "pooler_output", feats)))
    torch.testing.assert_close(trace["vision.merger"][0], feats)
    assert trace["vision.blocks.0"][0].shape[0] == video.num_patches


def test_text_only_and_dtype(scopes):
    scope = scopes["qwen2_5_vl"]
    trace = scope.forward(
        Example("Just text"),
        CapturePlan.of("llm.layers", layers="-1", tokens="query").add("llm.embed", tokens="text", reduce="mean"),
        dtype=torch.float16,
    )
    assert trace["llm.layers.2"][0].dtype == torch.float16 and trace["llm.layers.2"][0].shape == (1, 64)
    assert trace["llm.embed"][0].shape == (64,)


def test_text_only_example_beside_an_image_example(scopes, family, images):
    """A text-only example gets an empty capture at vision sites; a reduction of nothing is an
    error naming the example."""
    scope = scopes[family]
    exs = [Example("Just text"), Example("What colour?", images=images[:1])]
    trace = scope.forward(exs, ["vision.merger", "vision.blocks.0", "llm.layers.0"], tokens="all")
    alone = scope.forward(exs[1:], ["vision.merger", "vision.blocks.0"])
    for site in ("vision.merger", "vision.blocks.0"):
        assert trace[site][0].shape == (0, alone[site][0].shape[-1])
        torch.testing.assert_close(trace[site][1], alone[site][0])
    assert trace["llm.layers.0"][0].shape[0] == trace.token_maps[0].length
    with pytest.raises(VlmscopeError, match="example 0 has no image: vision.merger reduced by mean"):
        scope.forward(exs, CapturePlan.of("vision.merger", reduce="mean"))


def test_generate_logits_of_every_position(scopes, family, images):
    """transformers computes the prefill's logits at its last position only; tokens="all" gets
    the others through the same head from the final norm: they equal a forward's."""
    scope = scopes[family]
    exs = [Example("Just text"), Example("What colour is it?", images=images[:1])]
    trace = scope.generate(exs, "logits", tokens="all", max_new_tokens=3)
    fw = scope.forward(exs, "logits", tokens="all")
    for b, tm in enumerate(trace.token_maps):
        n = fw.token_maps[b].length
        assert trace.positions["logits"][b] == list(range(tm.length - 1))
        torch.testing.assert_close(trace["logits"][b][:n], fw["logits"][b], atol=1e-5, rtol=1e-5)
    gen = scope.generate(exs, "logits", tokens="generated", max_new_tokens=3)
    for b, tm in enumerate(trace.token_maps):
        q = tm.query
        torch.testing.assert_close(trace["logits"][b][q:], gen["logits"][b], atol=0, rtol=0)


def test_prompt_only_hooks_leave_at_the_first_decode_step(scopes, images):
    scope = scopes["qwen2_vl"]
    layer = scope.adapter.language_model.layers[1]
    seen = []
    h = layer.register_forward_pre_hook(lambda m, a: seen.append(len(m._forward_pre_hooks)))
    try:
        plan = CapturePlan.of("llm.layers", layers="0", tokens="query", name="qt")
        trace = scope.generate(Example("hi", images=images[:1]), plan, max_new_tokens=4, min_new_tokens=4)
        assert seen[0] == 2 and set(seen[1:]) == {1}  # ours + the capture, then ours alone
        assert trace["qt/llm.layers.0"][0].shape[0] == 1
        seen.clear()
        scope.generate(Example("hi", images=images[:1]), "llm.layers.0", max_new_tokens=4, min_new_tokens=4)
        assert set(seen) == {2}  # generated rows: kept at every step
    finally:
        h.remove()
    assert len(layer._forward_pre_hooks) == 0
