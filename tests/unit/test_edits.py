"""Public activation edits: patching, steering, ablation, and their errors."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

import vlmscope
from vlmscope import Edit, Example, VlmscopeError
from vlmscope.assets import HERE
from vlmscope.methods import Answer, mask_impact
from vlmscope.methods.masking import Unit


def _pair():
    a = Example("What colour is the circle?", images=[random_image(64, 96, 11)])
    b = Example("What colour is the circle?", images=[random_image(64, 96, 12)])
    return a, b


def test_patching_vision_tokens_makes_later_sites_equal_the_donor_run(scopes, family):
    """Layer 1 is past every tiny model's deepstack injection, so from layer 1 on the vision
    positions of A see exactly B's causal past: the system prompt (same tokens) and B's vision states."""
    scope = scopes[family]
    a, b = _pair()
    donor = scope.forward(b, ["llm.layers", "llm.norm"], tokens="vision")
    clean = scope.forward(a, ["llm.layers"], tokens="vision")
    patched = scope.forward(
        a,
        ["llm.layers", "llm.norm"],
        tokens="vision",
        edits={"llm.layers.1": Edit(lambda x: donor["llm.layers.1"][0], tokens="vision")},
    )
    assert torch.equal(patched["llm.layers.0"][0], clean["llm.layers.0"][0])  # before the edit: untouched
    for site in ["llm.layers.1", "llm.layers.2", "llm.norm"]:
        torch.testing.assert_close(patched[site][0], donor[site][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(clean["llm.layers.2"][0], donor["llm.layers.2"][0], atol=1e-3)  # the test can fail


def test_text_after_the_image_still_differs_from_the_donor(scopes):
    """Text positions attended A's vision tokens in layers 0..1, so patching at layer 1 does not
    make them B's: an edit changes what later layers see, nothing earlier."""
    scope = scopes["qwen2_vl"]
    a, b = _pair()
    donor = scope.forward(b, ["llm.layers.1", "llm.layers.2"], tokens="all")
    vision = donor.token_maps[0].vision_positions()
    patched = scope.forward(
        a,
        "llm.layers.2",
        tokens="all",
        edits={"llm.layers.1": Edit(lambda x: donor["llm.layers.1"][0][vision], tokens="vision")},
    )
    torch.testing.assert_close(patched["llm.layers.2"][0][vision], donor["llm.layers.2"][0][vision])
    q = donor.token_maps[0].query
    assert not torch.allclose(patched["llm.layers.2"][0][q], donor["llm.layers.2"][0][q], atol=1e-4)


def test_steering_vector_adds_to_the_stream_and_the_next_layer_sees_it(scopes):
    scope = scopes["qwen3_vl"]
    a, _ = _pair()
    steer = torch.randn(scope.adapter.text_config.hidden_size)
    clean = scope.forward(a, "llm.layers.1", tokens="text")
    steered = scope.forward(
        a, "llm.layers.1", tokens="text", edits={"llm.layers.1": Edit(lambda x: x + steer, tokens="text")}
    )
    torch.testing.assert_close(steered["llm.layers.1"][0], clean["llm.layers.1"][0] + steer)


def test_edits_apply_at_every_generate_step(scopes):
    scope = scopes["qwen2_vl"]
    a, _ = _pair()
    forced = (
        scope.processor.tokenizer.convert_tokens_to_ids("red")
        if "red" in scope.processor.tokenizer.get_vocab()
        else 100
    )

    def only(x):
        out = torch.full_like(x, -1e4)
        out[..., forced] = 0
        return out

    trace = scope.generate(a, max_new_tokens=5, edits={"logits": only})
    assert trace.generated_ids[0] == [forced] * 5


def test_ablating_one_head_changes_only_what_that_head_writes(scopes):
    scope = scopes["qwen2_vl"]
    a, _ = _pair()
    heads, dim = scope.adapter.num_heads, scope.adapter.text_config.hidden_size // scope.adapter.num_heads

    def ablate_head_1(x):
        x = x.reshape(x.shape[0], heads, dim).clone()
        x[:, 1] = 0
        return x.reshape(x.shape[0], -1)

    clean = scope.forward(a, ["llm.layers.0.heads", "llm.layers.0"])
    cut = scope.forward(a, ["llm.layers.0.heads", "llm.layers.0"], edits={"llm.layers.0.heads": ablate_head_1})
    got = cut["llm.layers.0.heads"][0].reshape(-1, heads, dim)
    assert torch.count_nonzero(got[:, 1]) == 0
    torch.testing.assert_close(got[:, 0], clean["llm.layers.0.heads"][0].reshape(-1, heads, dim)[:, 0])
    assert not torch.allclose(cut["llm.layers.0"][0], clean["llm.layers.0"][0])


def test_zero_edit_of_the_merger_equals_masking_zero_replacement():
    """On the bundled Qwen3-VL the zero replacement also zeroes the token's deepstack rows."""
    scope = vlmscope.load(device="cpu", dtype="float32")
    ex = Example("What colour is the square?", images=[str(HERE / "examples" / "shapes_demo.png")])
    answer = Answer.resolve(scope, ex, max_new_tokens=3)
    cell = 8
    pos = answer.token_map.visuals[0].positions[cell]
    masked = mask_impact(
        scope, ex, answer_ids=answer.ids, perturbation="zero", units=[Unit("vision", "cell", (pos,), 0, (cell,))]
    )

    def zero_cell(x):
        return x.index_fill(0, torch.tensor([cell]), 0.0)

    edits = {
        "vision.merger": zero_cell,
        **{f"vision.deepstack.{k}": zero_cell for k in range(scope.adapter.num_deepstack)},
    }
    batch = answer.batch(scope)
    clean = scope.forward(batch, "logits", tokens="generated")["logits"][0].log_softmax(-1)
    edited = scope.forward(answer.batch(scope), "logits", tokens="generated", edits=edits)["logits"][0].log_softmax(-1)
    ids = torch.tensor(answer.ids)[:, None]
    delta = (edited.gather(-1, ids) - clean.gather(-1, ids))[:, 0]
    torch.testing.assert_close(delta, torch.from_numpy(masked.delta_logprob[0]), rtol=1e-4, atol=1e-5)
    assert delta.abs().max() > 0  # the token matters, so equality is not trivial


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"llm.layer.1": lambda x: x}, "unknown site 'llm.layer.1'"),
        ({"llm.layers": lambda x: x}, "site 'llm.layers' needs an index"),
        ({"llm.layers.9": lambda x: x}, "site 'llm.layers.9' out of range"),
        ({"llm.layers.0.attn": lambda x: x}, "cannot be edited; editable sites: vision.patch_embed"),
        ({"llm.layers.0": "zero"}, "is not a function of the tensor"),
        ({"llm.layers.0": lambda x: x[:1]}, r"edit at llm.layers.0 \(example 0\) must return a tensor of shape"),
        ({"vision.merger": lambda x: x[:, :3]}, r"edit at vision.merger \(example 0, visual 0\) must return a tensor"),
        ({"vision.merger": Edit(lambda x: x, tokens="query")}, "takes tokens all, vision or image:K"),
    ],
)
def test_bad_edits_give_one_clear_error(scopes, edits, message):
    with pytest.raises(VlmscopeError, match=message):
        scopes["qwen2_vl"].forward(_pair()[0], "llm.layers.2", edits=edits)
