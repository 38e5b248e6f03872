"""Per-token maps: raw maps against eager attention by hand; rollout and relevancy against naive
full-matrix loops and a toy with a known answer; sinks; rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image
from transformers import AutoModelForImageTextToText

from vlmscope import Example
from vlmscope.methods import explain
from vlmscope.methods.attention_flow import identity_columns, relevancy_step, rollout_step
from vlmscope.methods.sinks import detect_sinks, exclude


@pytest.fixture(scope="module")
def eager(tiny_dirs):
    return {
        f: AutoModelForImageTextToText.from_pretrained(p, attn_implementation="eager", dtype=torch.float32).eval()
        for f, p in tiny_dirs.items()
    }


@pytest.mark.parametrize("agg", ["mean", "max"])
def test_raw_maps_equal_eager_by_hand(scopes, eager, family, agg):
    scope = scopes[family]
    ex = Example("What colour is the circle?", images=[random_image(64, 96, 1), random_image(56, 56, 2)])
    result = explain(
        scope, ex, method="raw", layers="0,-1", heads="0,2", head_agg=agg, layer_agg="mean", max_new_tokens=4
    )
    tm = result.token_map
    with torch.no_grad():
        inputs = scope.prepare(ex).inputs
        ids = torch.tensor([tm.input_ids])
        mm = torch.cat(
            [
                inputs["mm_token_type_ids"],
                torch.zeros(1, ids.shape[1] - inputs["input_ids"].shape[1], dtype=torch.long),
            ],
            1,
        )
        att = eager[family](
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=mm,
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            output_attentions=True,
        ).attentions
    n = scope.adapter.num_layers
    rows, cols = tm.predicting_positions(len(result.token_ids)), tm.vision_positions()
    per_layer = []
    for layer in (0, n - 1):
        a = att[layer][0][[0, 2]][:, rows][:, :, cols]  # [heads, rows, vision cols]
        per_layer.append(a.mean(0) if agg == "mean" else a.max(0).values)
    want = torch.stack(per_layer).mean(0).numpy()
    np.testing.assert_allclose(result.maps, want, atol=1e-5)
    assert result.visual_map(0, 1).shape == tm.visuals[1].merged_thw


def _naive_rollout(attns, residual=0.5):
    r = torch.eye(attns[0].shape[0])
    for a in attns:
        m = (1 - residual) * a + residual * torch.eye(a.shape[0])
        r = (m / m.sum(-1, keepdim=True)) @ r
    return r


def _random_causal(t, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(t, t, generator=g).tril()
    return a / a.sum(-1, keepdim=True)


def test_rollout_columns_equal_full_product():
    attns = [_random_causal(7, s) for s in range(4)]
    cols = torch.tensor([1, 2, 4])
    m = identity_columns(7, cols)
    for a in attns:
        m = rollout_step(m, a)
    torch.testing.assert_close(m, _naive_rollout(attns)[:, cols])


def test_rollout_toy_chain():
    # token 2 attends only to 1, token 1 only to 0; residual 0.5. After two layers token 2 keeps
    # 1/4 on itself (stays twice), 1/2 on token 1 (one hop, in either layer), 1/4 on token 0 (two hops).
    a = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    m = identity_columns(3, torch.arange(3))
    for _ in range(2):
        m = rollout_step(m, a)
    torch.testing.assert_close(m[2], torch.tensor([0.25, 0.5, 0.25]))


def test_relevancy_equals_naive_loop_and_ignores_negative_evidence():
    heads, t = 2, 5
    attns = [torch.stack([_random_causal(t, 10 * s + h) for h in range(heads)]) for s in range(3)]
    grads = [torch.randn(heads, t, t, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    r = torch.eye(t)
    for a, g in zip(attns, grads):
        r = r + (g * a).clamp(min=0).mean(0) @ r
    cols = torch.tensor([0, 3])
    m = identity_columns(t, cols)
    for a, g in zip(attns, grads):
        m = relevancy_step(m, a, g)
    torch.testing.assert_close(m, r[:, cols])
    # a layer whose gradient is entirely negative adds nothing
    m2 = relevancy_step(identity_columns(t, cols), attns[0], -grads[0].abs())
    torch.testing.assert_close(m2, identity_columns(t, cols))


def test_eager_layers_reproduce_the_model(scopes):
    from vlmscope.capture.attention import EagerLayers, intervening

    scope = scopes["qwen2_5_vl"]
    inputs = scope.prepare(Example("hi there", images=[random_image(56, 84, 3)])).inputs
    with torch.no_grad():
        ref = scope.model(**inputs).logits
        eager = EagerLayers([0, 2])
        with intervening(eager):
            got = scope.model(**inputs).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert set(eager.probs) == {0, 2}


def test_rollout_and_gradient_run_end_to_end(scopes, family):
    ex = Example("Where is the red square?", images=[random_image(64, 96, 4)], answer="left")
    for method in ("rollout", "gradient"):
        r = explain(scopes[family], ex, method=method)
        assert r.maps.shape == (len(r.token_ids), 6) and np.isfinite(r.maps).all() and (r.maps >= 0).all()
        assert r.answer == "left"


def test_sinks_detected_and_excluded():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.01, 0.02, (6, 20))
    maps[:, 3] = 0.5  # absorbs attention for every token
    assert detect_sinks(maps) == [3]
    cleaned = exclude(maps, [3])
    assert (cleaned[:, 3] == 0).all()
    np.testing.assert_allclose(cleaned.sum(1), maps.sum(1))


def test_rendering_sizes_and_self_contained_html(scopes, tmp_path):
    ex = Example("What colour?", images=[random_image(70, 110, 5)])
    r = explain(scopes["qwen3_vl"], ex, max_new_tokens=3, keep_text=True)
    assert r.text_maps.shape == (len(r.token_ids), len(r.token_map.text_positions()))
    written = r.save(tmp_path, formats=("png", "npz", "html", "pdf"))
    from PIL import Image

    tokens = sorted((tmp_path / "tokens").glob("*_heatmap.png"))
    assert len(tokens) == len(r.token_ids)
    heat = Image.open(tokens[0])
    assert heat.height == 70 and heat.width > 110  # the original image's size (under 1024 px), then a colour bar
    side = [p for p in (tmp_path / "tokens").glob("*.png") if not p.name.endswith("_heatmap.png")][0]
    assert Image.open(side).size[0] > 2 * 110 - 1
    page = (tmp_path / "report.html").read_text()
    # one cell per token, each with a per-token and a shared-scale layer; every image inline
    assert page.count('class="layer s-token"') == page.count('class="layer s-shared"') == len(r.token_ids)
    assert "data:image/png;base64," in page and 'src="http' not in page and "<script src" not in page
    assert (tmp_path / "maps.pdf").read_bytes()[:4] == b"%PDF"
    assert np.load(written["npz"])["maps"].shape == r.maps.shape
