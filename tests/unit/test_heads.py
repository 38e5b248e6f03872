"""Head specs, and head discovery on a tiny model whose one head is made, by setting its weights,
to attend to the asked object's vision tokens: discovery must rank that head first."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vlmscope
from vlmscope import Example, VlmscopeError
from vlmscope.methods import explain
from vlmscope.methods.faithfulness import BoxItem, csv_items
from vlmscope.methods.heads import check_head_spec, discover, head_pairs
from vlmscope.models.tiny import build_tiny_model, build_tokenizer

LAYER, HEAD = 1, 3  # the head forced to look at the object


def test_head_specs():
    assert head_pairs("all", 4, 4) is None and head_pairs("0,1", 4, 4) is None
    assert head_pairs("2.1,3.0,2.0,-1.3", 4, 4) == {2: [0, 1], 3: [0, 3]}
    with pytest.raises(VlmscopeError, match="head 4.0 out of range: the model has layers 0..3 and heads 0..3"):
        head_pairs("4.0", 4, 4)
    with pytest.raises(VlmscopeError, match="bad head spec '1.2.3'"):
        check_head_spec("1.2.3")
    with pytest.raises(VlmscopeError, match="no such heads file"):
        check_head_spec("missing.json")


def test_heads_file_and_pairs_select_the_same_maps(scopes, tmp_path):
    scope = scopes["qwen2_vl"]
    (tmp_path / "h.json").write_text(json.dumps({"top": [[1, 2], [0, 3]]}))
    (tmp_path / "bad.json").write_text("{}")
    ex = Example("What colour is the circle?", images=[Image.new("RGB", (56, 56), "white")])
    by_file = explain(scope, ex, "raw", max_new_tokens=2, heads=str(tmp_path / "h.json"))
    by_pairs = explain(scope, ex, "raw", max_new_tokens=2, heads="1.2,0.3")
    np.testing.assert_allclose(by_file.maps, by_pairs.maps)
    assert by_pairs.layers == [0, 1] and by_pairs.heads == [2, 3]
    # the map of two pairs is the mean of the two single-head maps (every pair counts once)
    single = [
        explain(scope, ex, "raw", max_new_tokens=2, layers=str(i), heads=str(h)).maps for i, h in ((1, 2), (0, 3))
    ]
    np.testing.assert_allclose(by_pairs.maps, (single[0] + single[1]) / 2, rtol=1e-5)
    with pytest.raises(VlmscopeError, match="not a heads file"):
        explain(scope, ex, "raw", heads=str(tmp_path / "bad.json"))
    with pytest.raises(VlmscopeError, match="not both"):
        explain(scope, ex, "rollout", layers="0", heads="1.2")
    for method in ("rollout", "gradient"):  # pairs restrict the flow to the pairs' layers and heads
        got = explain(scope, ex, method, max_new_tokens=2, heads="1.2,0.3")
        assert got.layers == [0, 1] and np.isfinite(got.maps).all()


def _scene(rng, size: int = 168, cell: int = 28) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Black image with a white square (the asked object) and a red one (a distractor), each
    covering one 28-px vision token (2x2 patches of 14 px)."""
    img = np.zeros((size, size, 3), np.uint8)
    cells = rng.choice((size // cell) ** 2, 2, replace=False)
    boxes = []
    for k, colour in zip(cells, ((255, 255, 255), (255, 0, 0))):
        r, c = divmod(int(k), size // cell)
        boxes.append((c * cell, r * cell, c * cell + cell, r * cell + cell))
        img[r * cell : r * cell + cell, c * cell : c * cell + cell] = colour
    return Image.fromarray(img), boxes[0]


def _layer_inputs(scope, example) -> tuple[torch.Tensor, list[int]]:
    """The normalised input of decoder layer LAYER (what its k_proj reads) and the vision positions."""
    seen = {}
    layer = scope.adapter.language_model.layers[LAYER]

    def keep(module, args, out):
        seen["x"] = out[0].detach()

    handle = layer.input_layernorm.register_forward_hook(keep)
    try:
        trace = scope.forward(example, None)
    finally:
        handle.remove()
    return seen["x"], trace.token_maps[0].vision_positions()


def _force_head(scope, items) -> None:
    """Head HEAD of layer LAYER: a constant query (bias only) and keys that are large on the
    object's vision tokens, both in the lowest-frequency rotary pair, which barely rotates."""
    attn = scope.adapter.language_model.layers[LAYER].self_attn
    d, n_rep = attn.head_dim, attn.config.num_attention_heads // attn.config.num_key_value_heads
    on, off = [], []
    for it in items:
        x, vis = _layer_inputs(scope, it.example)
        boxes = scope.prepare(it.example).token_maps[0].visuals[0].token_boxes()
        inside = [(b[0] >= it.box[0] and b[2] <= it.box[2] and b[1] >= it.box[1] and b[3] <= it.box[3]) for b in boxes]
        on += [x[p] for p, i in zip(vis, inside) if i]
        off += [x[p] for p, i in zip(vis, inside) if not i]
    u = torch.stack(on).mean(0) - torch.stack(off).mean(0)
    threshold = (torch.stack(on) @ u).min() / 2 + (torch.stack(off) @ u).max() / 2
    dim = d // 2 - 1  # first half of the last rotary pair (rotate_half layout)
    with torch.no_grad():
        q_rows = slice(HEAD * d, (HEAD + 1) * d)
        attn.q_proj.weight[q_rows] = 0
        attn.q_proj.bias[q_rows] = 0
        attn.q_proj.bias[HEAD * d + dim] = 1.0
        k = (HEAD // n_rep) * d + dim
        attn.k_proj.weight[k] = 40 * u / (u @ u).sqrt()
        attn.k_proj.bias[k] = -40 * threshold / (u @ u).sqrt()


def test_discovery_ranks_the_forced_head_first(tmp_path):
    rng = np.random.default_rng(0)
    path = build_tiny_model("qwen2_vl", tmp_path / "m", tokenizer=build_tokenizer(), seed=1)
    scope = vlmscope.load(path, device="cpu", dtype="float32")
    scenes = [_scene(rng) for _ in range(16)]
    items = [BoxItem(str(i), Example("Where is the square?", images=[im]), box) for i, (im, box) in enumerate(scenes)]
    before = discover(scope, items[8:])
    _force_head(scope, items[:8])  # set from eight scenes, discovered on eight others
    after = discover(scope, items[8:])
    first = after.heads[0]
    assert (first["layer"], first["head"]) == (LAYER, HEAD), after.table()
    assert first["pointing"]["mean"] == 1.0
    # random heads already lean towards the white square (its tokens stand out), but with nearly flat
    # maps; before the weights were set, the forced head was not first
    assert (before.heads[0]["layer"], before.heads[0]["head"]) != (LAYER, HEAD), before.table()
    assert first["entropy"] < 0.05  # nearly all its weight on one token
    assert (LAYER, HEAD) in after.top
    saved = after.save(tmp_path / "heads.json")
    assert json.loads(saved.read_text())["top"][0] == [LAYER, HEAD]


def test_csv_items_read_boxes_and_skip_rows_without_one(tmp_path):
    from vlmscope.data.shapes import export_vqa

    csv_path = export_vqa(10, tmp_path / "d", seed=7)
    items = csv_items(csv_path)
    rows = (tmp_path / "d" / "questions.csv").read_text().splitlines()[1:]
    assert len(items) == sum(1 for r in rows if not r.endswith(",,,,")) and 0 < len(items) < 10
    assert all(len(it.box) == 4 and it.answer for it in items)
    (tmp_path / "nobox.csv").write_text("question_id,image_id,question,answer\n1,a,q,x\n")
    with pytest.raises(VlmscopeError, match="needs the box columns"):
        csv_items(tmp_path / "nobox.csv")
