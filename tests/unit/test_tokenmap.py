"""TokenMap against input_ids, pixel boxes against the grid, Qwen2.5-VL raster order."""

from __future__ import annotations

import numpy as np
import torch
from conftest import random_image
from PIL import Image

from vlmscope import Example


def test_spans_match_input_ids(scopes, family, images):
    scope = scopes[family]
    ids = scope.adapter.token_ids
    batch = scope.prepare([Example("Two pictures?", images=images[:2], system="Be brief."), Example("Hello there")])
    tm, text_only = batch.token_maps
    for v in tm.visuals:
        s, e = v.segments[0]
        assert tm.input_ids[s - 1] == ids["vision_start"] and tm.input_ids[e] == ids["vision_end"]
        assert all(t == ids["image"] for t in tm.input_ids[s:e])
        assert v.num_tokens == np.prod(v.merged_thw) == np.prod(v.grid_thw) // 4
    assert sum(t == ids["image"] for t in tm.input_ids) == len(tm.vision_positions())
    tok = scope.processor.tokenizer
    assert tok.decode(tm.input_ids[slice(*tm.system)]) == "Be brief."
    assert tok.decode([tm.input_ids[p] for p in tm.text_positions()]) == "Two pictures?"
    assert tm.query == tm.length - 1 and tm.input_ids[tm.prompt[1]] == ids["im_end"]
    assert text_only.visuals == [] and tok.decode(text_only.input_ids[slice(*text_only.prompt)]) == "Hello there"
    # the padded batch holds each example's ids right-aligned
    for b, t in enumerate(batch.token_maps):
        assert batch.inputs["input_ids"][b, batch.pad[b] :].tolist() == t.input_ids


def test_select_equals_preparing_the_example_alone(scopes, family, images):
    """Cutting one example out of a padded batch gives the tensors the processor gives it alone:
    extraction's one-row retry after an out-of-memory batch relies on it."""
    scope = scopes[family]
    frames = [random_image(56, 56, s) for s in (4, 5)]
    examples = [
        Example("Two pictures?", images=images[:2]),
        Example("Hello there"),
        Example("What happens?", images=[images[2]], videos=[frames]),
        Example("One.", images=[images[1]]),
    ]
    batch = scope.prepare(examples, with_answers=False)
    assert len(set(batch.pad)) > 1  # the cut must undo real padding
    for b, ex in enumerate(examples):
        alone, cut = scope.prepare([ex], with_answers=False), batch.select(b)
        assert set(cut.inputs) == set(alone.inputs)
        for key, value in cut.inputs.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(alone.inputs[key])), (family, b, key)
        assert cut.token_maps == alone.token_maps and cut.pad == [0]


def test_answer_is_appended_for_teacher_forcing(scopes):
    scope = scopes["qwen2_vl"]
    tm = scope.prepare(Example("Colour?", images=[random_image(56, 56, 0)], answer="red")).token_maps[0]
    tok = scope.processor.tokenizer
    assert tok.decode(tm.input_ids[slice(*tm.answer)]) == "red<|im_end|>"
    assert tm.query == tm.answer[0] - 1
    assert tm.predicting_positions(2) == [tm.query, tm.query + 1]


def test_token_boxes_cover_the_original_image(scopes, family):
    scope = scopes[family]
    img = random_image(100, 150, 0)  # resized by the processor to a multiple of patch*merge
    v = scope.prepare(Example("where?", images=[img])).token_maps[0].visuals[0]
    boxes = v.token_boxes()
    t, h, w = v.merged_thw
    assert boxes.shape == (t * h * w, 4)
    np.testing.assert_allclose(boxes[0, :2], [0, 0])
    np.testing.assert_allclose(boxes[-1, 2:], [150, 100], rtol=1e-5)
    cell_w, cell_h = 150 / w, 100 / h
    np.testing.assert_allclose(boxes[1] - boxes[0], [cell_w, 0, cell_w, 0], rtol=1e-5)  # raster: x moves first
    np.testing.assert_allclose(boxes[w] - boxes[0], [0, cell_h, 0, cell_h], rtol=1e-5)
    assert v.resized_size[0] % (v.patch_size * v.merge_size) == 0


def _bright_patch_image(patch: int, rows: int, cols: int, at: tuple[int, int]) -> Image.Image:
    arr = np.full((rows * patch, cols * patch, 3), 60, dtype=np.uint8)
    r, c = at
    arr[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = 255
    return Image.fromarray(arr)


def test_vision_blocks_come_back_in_raster_order(scopes, family):
    scope = scopes[family]
    p = scope.adapter.patch_size
    rows, cols, at = 8, 12, (1, 5)  # 2x3 Qwen2.5-VL windows; window order moves this patch
    img = _bright_patch_image(p, rows, cols, at)
    trace = scope.forward(Example("x", images=[img]), ["vision.patch_embed", "vision.blocks"])
    v = trace.token_maps[0].visuals[0]
    assert v.grid_thw == (1, rows, cols)
    for site in ["vision.patch_embed"] + [f"vision.blocks.{i}" for i in range(scope.adapter.vision_depth)]:
        x = trace[site][0]
        dev = (x - x.median(0).values).norm(dim=-1).reshape(rows, cols)
        assert divmod(int(dev.argmax()), cols) == at, site


def test_merger_tokens_in_raster_order_for_windowed_tower(scopes):
    """Qwen2.5-VL's merger runs in window order; the captured tokens equal the model's own
    (un-permuted) image features, which the LLM places row by row."""
    scope = scopes["qwen2_5_vl"]
    img = _bright_patch_image(scope.adapter.patch_size, 8, 12, (5, 2))
    batch = scope.prepare(Example("x", images=[img]))
    trace = scope.forward(batch, ["vision.merger"])
    with torch.no_grad():
        feats = scope.model.model.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
    feats = torch.cat(list(getattr(feats, "pooler_output", feats)))
    torch.testing.assert_close(trace["vision.merger"][0], feats)
    dev = (feats - feats.median(0).values).norm(dim=-1).reshape(4, 6)
    assert divmod(int(dev.argmax()), 6) == (2, 1)  # patch (5, 2) lies in merged cell (2, 1)
