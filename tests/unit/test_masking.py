"""Token masking: every method against the plain model run by hand, units, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image

from vlmscope import Example, VlmscopeError
from vlmscope.methods.masking import MaskingOptions, Unit, build_units, mask_impact, vision_importance


def _example(scope, answer="red circle"):
    cell = scope.adapter.patch_size * scope.adapter.merge_size
    return Example("What colour is the circle?", images=[random_image(3 * cell, 4 * cell, 5)], answer=answer)


def _reference(scope, example, masks_per_layer=None, embeds_hook=None) -> torch.Tensor:
    """Answer log-probs from the plain model: full forward (vision tower, no cache) with a hand-built
    4D mask for each decoder layer and/or edited input embeddings."""
    batch = scope.prepare(example)
    tm, inp = batch.token_maps[0], batch.inputs
    positions, _ = scope.model.model.get_rope_index(
        inp["input_ids"], mm_token_type_ids=inp["mm_token_type_ids"], image_grid_thw=inp["image_grid_thw"]
    )
    handles = []
    for i, layer in enumerate(scope.adapter.language_model.layers):
        if masks_per_layer is not None:

            def pre(module, args, kwargs, m=masks_per_layer[i]):
                kwargs["attention_mask"] = m
                return args, kwargs

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    if embeds_hook is not None:
        handles.append(scope.adapter.language_model.register_forward_pre_hook(embeds_hook, with_kwargs=True))
    mask = masks_per_layer[0] if masks_per_layer is not None else None
    try:
        with torch.no_grad():
            logits = scope.model(
                **{k: v for k, v in inp.items() if k != "attention_mask"}, position_ids=positions, attention_mask=mask
            ).logits[0]
    finally:
        for h in handles:
            h.remove()
    rows = tm.predicting_positions(tm.answer[1] - tm.answer[0])
    answer = tm.input_ids[tm.answer[0] : tm.answer[1]]
    return torch.log_softmax(logits, -1)[rows, answer]


def _knockout_mask(length: int, unit: Unit, targets: torch.Tensor) -> torch.Tensor:
    """[1, 1, T, T] bool: causal, minus the edges from target positions outside the unit into it."""
    inside = torch.zeros(length, dtype=torch.bool)
    inside[list(unit.positions)] = True
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (causal & ~(inside[None, :] & ~inside[:, None] & targets[:, None]))[None, None]


@pytest.mark.parametrize("layers,edges", [("all", "all"), ("1", "last")])
def test_knockout_equals_hand_built_mask(scopes, family, layers, edges):
    scope = scopes[family]
    ex = _example(scope)
    result = mask_impact(scope, ex, mode="both", window=2, text_unit="word", layers=layers, edges=edges)
    tm = scope.prepare(ex).token_maps[0]
    n = scope.adapter.num_layers
    targets = torch.ones(tm.length, dtype=torch.bool) if edges == "all" else torch.arange(tm.length) >= tm.query
    causal = torch.ones(tm.length, tm.length, dtype=torch.bool).tril()[None, None]
    chosen = [0, len(result.units) // 2, len(result.units) - 1]  # a word, windows at the start and end of the image
    assert {result.units[i].kind for i in chosen} == {"text", "vision"}
    for i in chosen:
        knocked = _knockout_mask(tm.length, result.units[i], targets)
        masks = [knocked if layers == "all" or j == int(layers) else causal for j in range(n)]
        want = _reference(scope, ex, masks).numpy()
        np.testing.assert_allclose(result.clean_logprobs + result.delta_logprob[i], want, atol=2e-5)
    assert np.abs(result.delta_logprob[chosen]).max() > 1e-4  # the knockout did something


def test_knockout_under_eager_attention_equals_sdpa(scopes, tiny_dirs):
    import vlmscope

    eager = vlmscope.load(tiny_dirs["qwen2_vl"], device="cpu", dtype="float32", attn_implementation="eager")
    assert eager.attn_base == "eager"
    ex = _example(eager)
    for options in ({"mode": "both"}, {"mode": "both", "layers": "1", "edges": "question,last"}):
        want = mask_impact(scopes["qwen2_vl"], ex, **options)
        got = mask_impact(eager, ex, **options)
        np.testing.assert_allclose(got.delta_logprob, want.delta_logprob, atol=1e-5)


def test_clean_scores_equal_forward(scopes, family):
    scope = scopes[family]
    ex = _example(scope)
    result = mask_impact(scope, ex, mode="vision", window="image")
    np.testing.assert_allclose(result.clean_logprobs, _reference(scope, ex).numpy(), atol=2e-5)


@pytest.mark.parametrize("perturbation", ["zero", "mean"])
def test_embedding_replacement_equals_edited_inputs(scopes, family, perturbation):
    scope = scopes[family]
    ex = _example(scope)
    result = mask_impact(scope, ex, mode="both", window=2, perturbation=perturbation)
    tm = scope.prepare(ex).token_maps[0]
    for i in (0, len(result.units) - 1):
        unit = result.units[i]
        ref = tm.vision_positions() if unit.kind == "vision" else tm.text_positions()

        def hook(module, args, kwargs, unit=unit, ref=ref):
            x = kwargs["inputs_embeds"].clone()
            x[0, list(unit.positions)] = 0 if perturbation == "zero" else x[0, ref].mean(0)
            kwargs["inputs_embeds"] = x
            if kwargs.get("deepstack_visual_embeds") is not None and unit.kind == "vision":
                rows = [ref.index(p) for p in unit.positions]
                edited = []
                for d in kwargs["deepstack_visual_embeds"]:
                    d = d.clone()
                    d[rows] = 0 if perturbation == "zero" else d.mean(0)
                    edited.append(d)
                kwargs["deepstack_visual_embeds"] = edited
            return args, kwargs

        want = _reference(scope, ex, embeds_hook=hook).numpy()
        np.testing.assert_allclose(result.clean_logprobs + result.delta_logprob[i], want, atol=2e-5)


def test_occlusion_equals_painted_image(scopes, family):
    from PIL import ImageDraw

    from vlmscope.methods.masking.perturbations import occluded_pixels
    from vlmscope.methods.masking.prefix import clean_run

    scope = scopes[family]
    ex = _example(scope)
    result = mask_impact(scope, ex, mode="vision", perturbation="occlude", window=2)
    unit = result.units[1]
    visual = result.token_map.visuals[0]
    painted = ex.images[0].copy()
    x0, y0, x1, y1 = unit.box(visual)
    ImageDraw.Draw(painted).rectangle([x0, y0, x1 - 1, y1 - 1], fill=(128, 128, 128))
    painted_ex = Example(ex.prompt, images=[painted], answer=ex.answer)
    want_pixels = scope.prepare(painted_ex).inputs["pixel_values"]
    batch = scope.prepare(Example(ex.prompt, images=ex.images), with_answers=False)
    ctx = clean_run(scope, batch, result.answer_ids)
    got_pixels, _ = occluded_pixels(ctx, 0, [unit], "grey")
    # mid-grey is 127.5, the painted image can only hold 128: half a grey level apart
    torch.testing.assert_close(got_pixels, want_pixels, atol=0.6 / 255 / 0.26, rtol=0)
    changed = (got_pixels != ctx.pixel_values).any(-1).nonzero()[:, 0]
    m2 = scope.adapter.merge_size**2
    assert sorted(set((changed // m2).tolist())) == sorted(unit.cells)
    # and the score is what the plain model says with those pixels
    inp = scope.prepare(ex).inputs
    with torch.no_grad():
        logits = scope.model(**{**inp, "pixel_values": got_pixels}).logits[0]
    tm = result.token_map
    want = torch.log_softmax(logits, -1)[tm.predicting_positions(len(result.answer_ids)), result.answer_ids]
    np.testing.assert_allclose(result.clean_logprobs + result.delta_logprob[1], want.numpy(), atol=2e-5)


def test_blur_changes_only_the_unit(scopes):
    from vlmscope.methods.masking.perturbations import occluded_pixels
    from vlmscope.methods.masking.prefix import clean_run

    scope = scopes["qwen2_5_vl"]
    ex = _example(scope)
    batch = scope.prepare(Example(ex.prompt, images=ex.images), with_answers=False)
    ctx = clean_run(scope, batch, scope.processor.tokenizer("red")["input_ids"])
    unit = build_units(batch.token_maps[0], scope.processor.tokenizer, "vision", 2)[0]
    pixels, grid = occluded_pixels(ctx, 0, [unit], "blur")
    m2 = scope.adapter.merge_size**2
    changed = (pixels - ctx.pixel_values).abs().amax(-1) > 1e-6
    assert sorted(set((changed.nonzero()[:, 0] // m2).tolist())) == sorted(unit.cells)
    assert grid.tolist() == ctx.image_grid_thw.tolist()


@pytest.mark.parametrize("perturbation", ["knockout", "noise", "occlude"])
def test_batches_and_prefix_do_not_change_scores(scopes, perturbation):
    scope = scopes["qwen3_vl"]
    ex = _example(scope)
    one = mask_impact(scope, ex, mode="vision", perturbation=perturbation, batch_size=1)
    many = mask_impact(scope, ex, mode="vision", perturbation=perturbation, batch_size=5)
    np.testing.assert_allclose(one.delta_logprob, many.delta_logprob, atol=1e-5)
    np.testing.assert_allclose(one.kl, many.kl, atol=1e-5)


def test_regenerate_equals_generate_with_hand_built_masks(scopes):
    scope = scopes["qwen2_vl"]
    ex = _example(scope, answer=None)
    result = mask_impact(scope, ex, mode="both", window="image", text_unit="word", max_new_tokens=6, regenerate=True)
    batch = scope.prepare(ex)
    for unit, text, change in zip(result.units, result.regenerated, result.first_change):
        inside = torch.zeros(batch.length + 8, dtype=torch.bool)
        inside[list(unit.positions)] = True
        handles = []
        for layer in scope.adapter.language_model.layers:

            def pre(module, args, kwargs, inside=inside):
                q = args[0].shape[1] if args else kwargs["hidden_states"].shape[1]
                # the cache argument was renamed in transformers 5.24
                cache = kwargs["cache"] if "cache" in kwargs else kwargs["past_key_values"]
                past = cache.get_seq_length(module.self_attn.layer_idx)
                rows = torch.arange(past, past + q)
                causal = torch.arange(past + q)[None, :] <= rows[:, None]
                kwargs["attention_mask"] = (causal & ~(inside[None, : past + q] & ~inside[rows][:, None]))[None, None]
                return args, kwargs

            handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        try:
            with torch.no_grad():
                out = scope.model.generate(
                    **batch.inputs,
                    max_new_tokens=6,
                    do_sample=False,
                    pad_token_id=scope.processor.tokenizer.pad_token_id,
                )
        finally:
            for h in handles:
                h.remove()
        ids = out[0, batch.length :].tolist()
        stop = next((i + 1 for i, t in enumerate(ids) if t in scope.stop_ids()), len(ids))
        assert text == scope.processor.tokenizer.decode(ids[:stop], skip_special_tokens=True)
        if change is None:
            assert text == result.answer_text


def test_vision_importance_is_the_single_token_map(scopes):
    scope = scopes["qwen2_5_vl"]
    ex = _example(scope)
    values = vision_importance(scope, ex, token=1)
    result = mask_impact(scope, ex, MaskingOptions(mode="vision"))
    assert values.shape == (result.token_map.visuals[0].num_tokens,)
    np.testing.assert_allclose(values, -result.delta_logprob[:, 1], atol=1e-6)
    np.testing.assert_allclose(result.vision_map(0, None, "kl"), result.kl.sum(1), atol=1e-6)


def test_units_tiled_sliding_words_images(scopes):
    scope = scopes["qwen2_vl"]
    tm = scope.prepare(_example(scope)).token_maps[0]
    tok = scope.processor.tokenizer
    h, w = tm.visuals[0].merged_thw[1:]
    tiled = build_units(tm, tok, "vision", 2)
    sliding = build_units(tm, tok, "vision", 2, stride=1)
    assert len(sliding) == (h - 1) * (w - 1)
    for units in (tiled, sliding):
        assert all(len(u.cells) == 4 for u in units)
        assert set().union(*(u.cells for u in units)) == set(range(h * w))
    assert [u.label for u in build_units(tm, tok, "text", text_unit="word")] == [
        "What",
        "colour",
        "is",
        "the",
        "circle",
        "?",
    ]
    (image,) = build_units(tm, tok, "vision", "image")
    assert image.positions == tuple(tm.vision_positions())


@pytest.mark.parametrize(
    "options,message",
    [
        ({"window": 9}, "window 9 is larger than the 3x4 token grid of image 0; use a window of 1..3 or 'image'"),
        ({"window": 0}, "bad window 0"),
        ({"mode": ""}, "unknown mask mode ''; choose from text, vision, both"),
        ({"mode": "pixels"}, "unknown mask mode 'pixels'"),
        (
            {"perturbation": "blackout"},
            "unknown perturbation 'blackout'; choose from knockout, zero, mean, noise, occlude",
        ),
        ({"perturbation": "occlude", "mode": "text"}, "needs mode 'vision'"),
        ({"perturbation": "zero", "layers": "1"}, "layers and edges restrict attention knockout"),
        ({"edges": "image"}, "unknown edge set image; choose from all, vision, question, last"),
        ({"layers": "7"}, "layer 7 out of range"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1"),
        ({"text_unit": "sentence"}, "unknown text unit 'sentence'"),
    ],
)
def test_bad_options_are_one_line_errors(scopes, options, message):
    scope = scopes["qwen3_vl"]
    with pytest.raises(VlmscopeError) as err:
        mask_impact(scope, _example(scope), **options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_empty_selections_are_errors(scopes):
    scope = scopes["qwen2_vl"]
    with pytest.raises(VlmscopeError, match="selects no vision tokens: the example has no image; use --mode text"):
        mask_impact(scope, Example("What colour is the circle?", answer="red"), mode="vision")
    with pytest.raises(VlmscopeError, match="image:2 does not exist"):
        mask_impact(scope, _example(scope), image_index=2)


def test_save_writes_json_csv_heatmaps_and_text_page(scopes, tmp_path):
    import csv
    import json

    scope = scopes["qwen3_vl"]
    result = mask_impact(scope, _example(scope), mode="both", window=2)
    out = result.save(tmp_path / "m")
    data = json.loads((out / "result.json").read_text())
    assert data["answer"]["tokens"] == result.answer_tokens and len(data["units"]) == len(result.units)
    assert data["units"][-1]["box"] and data["settings"]["perturbation"] == "knockout"
    rows = list(csv.DictReader((out / "impacts.csv").open()))
    assert len(rows) == len(result.units) * len(result.answer_ids)
    n = len(result.answer_ids)
    names = {p.name for p in (out / "heatmaps").iterdir()}
    assert {"image0_total.png", "image0_sheet.png", f"image0_token{n - 1:02d}.png"} <= names
    assert (out / "text_importance.png").stat().st_size > 0
    assert "circle" in (out / "text_importance.html").read_text()


def _overlap(boxes: np.ndarray, box) -> np.ndarray:
    """Area of each token box [n, 4] (x0, y0, x1, y1) that lies inside `box`."""
    width = (np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0])).clip(0)
    height = (np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1])).clip(0)
    return width * height


def test_shapes_model_object_tokens_matter_more_than_background():
    from vlmscope.assets import bundled_model_dir

    if bundled_model_dir() is None:
        pytest.skip("the bundled shapes model is not installed (src/vlmscope/assets/shapes-model)")
    import vlmscope
    from vlmscope.data.shapes import make_dataset

    scope = vlmscope.load(device="cpu", dtype="float32")
    drops = []
    for record in make_dataset(6, seed=11, question_types=("colour_of_shape", "shape_of_colour")):
        ex = Example(record.question, images=[record.image], answer=record.answer)
        tm = scope.prepare(ex).token_maps[0]
        visual = tm.visuals[0]
        boxes = visual.token_boxes()
        on_object = np.nonzero(_overlap(boxes, record.box) > 0)[0]
        busy = sum(_overlap(boxes, o.box) for o in record.scene.objects)
        background = np.nonzero(busy == 0)[0]
        rng = np.random.default_rng(0)
        background = rng.choice(background, size=min(len(on_object), len(background)), replace=False)
        units = [
            Unit("vision", name, tuple(visual.positions[i] for i in cells), 0, tuple(int(i) for i in cells))
            for name, cells in (("object", on_object), ("background", background))
        ]
        result = mask_impact(scope, ex, units=units)
        drops.append(-result.total_delta_logprob)
    drops = np.array(drops)  # [records, (object, background)]
    assert drops[:, 0].mean() > 5 * max(drops[:, 1].mean(), 0.05), drops
    assert (drops[:, 0] > drops[:, 1]).mean() >= 0.8, drops
