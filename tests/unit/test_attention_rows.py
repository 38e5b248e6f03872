"""Attention rows computed beside SDPA equal eager `output_attentions`, in forward and generate."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from vlmscope import Example


@pytest.fixture(scope="module")
def eager_models(tiny_dirs):
    return {
        fam: AutoModelForImageTextToText.from_pretrained(p, attn_implementation="eager", dtype=torch.float32).eval()
        for fam, p in tiny_dirs.items()
    }


def _examples(images, n_images: int):
    first = Example("What colour is the circle?", images=images[:1])
    second = Example("Is there a red square in one of these pictures?", images=images[1 : 1 + n_images])
    return [first, second]


@pytest.mark.parametrize("n_images", [1, 2])
def test_forward_rows_equal_eager(scopes, eager_models, family, images, n_images):
    scope = scopes[family]
    assert scope.adapter.text_config._attn_implementation.endswith("sdpa")  # the model keeps SDPA
    exs = _examples(images, n_images)
    exs[0].answer, exs[1].answer = "red", "yes it is"
    batch = scope.prepare(exs)
    trace = scope.forward(batch, ["llm.layers.attn"], tokens="generated")
    with torch.no_grad():
        ref = eager_models[family](**scope.prepare(exs).inputs, output_attentions=True).attentions
    for b, tm in enumerate(batch.token_maps):
        rows = tm.predicting_positions(tm.answer[1] - tm.answer[0])
        assert trace.positions["llm.layers.0.attn"][b] == rows
        pad = batch.pad[b]
        for i in range(scope.adapter.num_layers):
            want = ref[i][b][:, [pad + r for r in rows], pad:]
            torch.testing.assert_close(trace[f"llm.layers.{i}.attn"][b], want, atol=1e-5, rtol=1e-5)


def test_generate_rows_equal_eager(scopes, eager_models, family, images):
    scope = scopes[family]
    exs = _examples(images, 2)
    trace = scope.generate(exs, ["llm.layers.attn"], max_new_tokens=5)
    batch = scope.prepare(exs)
    with torch.no_grad():
        out = eager_models[family].generate(
            **batch.inputs,
            max_new_tokens=5,
            do_sample=False,
            output_attentions=True,
            return_dict_in_generate=True,
            pad_token_id=scope.processor.tokenizer.pad_token_id,
        )
    T0 = batch.length
    for b in range(len(trace.token_maps)):
        gen = trace.generated_ids[b]
        assert out.sequences[b, T0 : T0 + len(gen)].tolist() == gen  # same tokens as eager
        pad = batch.pad[b]
        for i in range(scope.adapter.num_layers):
            got = trace[f"llm.layers.{i}.attn"][b]  # [H, len(gen), T]
            assert got.shape[1] == len(gen)
            for j in range(len(gen)):
                step = out.attentions[j][i][b]  # [H, q, K]
                want = step[:, -1, pad:]
                torch.testing.assert_close(got[:, j, : want.shape[-1]], want, atol=1e-5, rtol=1e-5)
                assert got[:, j, want.shape[-1] :].abs().max() == 0 if got.shape[-1] > want.shape[-1] else True


def test_attention_rows_only_for_requested_layers(scopes, images):
    scope = scopes["qwen2_vl"]
    trace = scope.forward(Example("hi", images=images[:1]), ["llm.layers.1.attn"], tokens="query")
    assert trace.sites == ["llm.layers.1.attn"]
    row = trace["llm.layers.1.attn"][0]
    assert row.shape[1] == 1
    torch.testing.assert_close(row.sum(-1), torch.ones(row.shape[0], 1))


def test_vision_columns_only(scopes, images):
    scope = scopes["qwen3_vl"]
    from vlmscope import CapturePlan

    ex = Example("Is there a red square?", images=images[:2])
    full = scope.generate(ex, ["llm.layers.attn"], max_new_tokens=3)
    cols = scope.generate(ex, CapturePlan.of("llm.layers.attn", tokens="generated", columns="vision"), max_new_tokens=3)
    tm = full.token_maps[0]
    for i in range(scope.adapter.num_layers):
        key = f"llm.layers.{i}.attn"
        torch.testing.assert_close(cols[key][0], full[key][0][..., tm.vision_positions()])


@pytest.mark.parametrize("mask_kind", ["none", "bool4d", "additive4d", "padding2d"])
def test_decode_rows_equal_step_by_step(mask_kind):
    """Rows queued over decode steps and computed at the end equal each step's own computation,
    for every mask form a kernel gets (GQA: 6 query heads over 2 key heads)."""
    from vlmscope.capture.attention import DecodeRows, last_row_probabilities

    g = torch.Generator().manual_seed(0)
    b, h, kv, d, t0, steps = 2, 6, 2, 8, 5, 4
    keys = torch.randn(b, kv, t0 + steps, d, generator=g)
    pad = torch.ones(b, t0 + steps, dtype=torch.bool)
    pad[1, :2] = False  # example 1 is left-padded by two
    queued, want = DecodeRows(), []
    for s in range(steps):
        k_len = t0 + s + 1
        key, q = keys[:, :, :k_len], torch.randn(b, h, 1, d, generator=g)
        rows = pad[:, None, None, :k_len]
        mask = {
            "none": None,
            "bool4d": rows,
            "additive4d": torch.zeros(rows.shape).masked_fill(~rows, torch.finfo(torch.float32).min),
            "padding2d": pad[:, :k_len].long(),
        }[mask_kind]
        assert queued.extends(key)
        queued.add(q, key, mask, 0.3, step=s)
        want.append(last_row_probabilities(q, key, mask, 0.3)[:, :, 0])  # [B, H, K_s]
    assert not queued.extends(keys[:, :, : t0 + 1])  # a key that did not grow is another cache
    (probs, got_steps), *more = queued.take(max_steps=3)
    ((probs2, steps2),) = more
    assert got_steps + steps2 == list(range(steps)) and len(queued) == 0
    got = torch.cat([probs, probs2]).reshape(steps, b, h, -1)
    for s in range(steps):
        torch.testing.assert_close(got[s, :, :, : t0 + s + 1], want[s], atol=1e-6, rtol=1e-6)
        assert got[s, :, :, t0 + s + 1 :].abs().sum() == 0  # keys after the step get nothing


def test_layers_taken_together_equal_each_layer_alone():
    """Layers that queued the same steps are computed in one matmul; a layer whose mask differs
    (a sliding-window layer, say) is computed on its own; every layer's rows equal its own `take`."""
    from vlmscope.capture.attention import DecodeRows, last_row_probabilities, take_together

    g = torch.Generator().manual_seed(1)
    b, h, kv, d, t0, steps, layers = 2, 4, 2, 8, 5, 6, 4
    keys = [torch.randn(b, kv, t0 + steps, d, generator=g) for _ in range(layers)]
    together, alone = [DecodeRows() for _ in range(layers)], [DecodeRows() for _ in range(layers)]
    reference = [[] for _ in range(layers)]  # each step's own computation, [B, H, K_s]
    for s in range(steps):
        k_len = t0 + s + 1
        shared = torch.ones(b, 1, 1, k_len, dtype=torch.bool)
        shared[1, ..., :2] = False  # example 1 is left-padded by two
        window = shared.clone()
        window[..., : max(k_len - 3, 0)] = False  # layer 2 sees only its last three keys
        for layer in range(layers):
            q = torch.randn(b, h, 1, d, generator=g)
            mask = window if layer == 2 else shared
            for queue in (together[layer], alone[layer]):
                queue.add(q, keys[layer][:, :, :k_len], mask, 0.3, step=s)
            reference[layer].append(last_row_probabilities(q, keys[layer][:, :, :k_len], mask, 0.3)[:, :, 0])
    assert together[0].same_steps(together[1]) and not together[1].same_steps(together[2])
    got = take_together(together, max_steps=4)
    for layer in range(layers):
        want = alone[layer].take(max_steps=4)
        assert [steps for _, steps in got[layer]] == [steps for _, steps in want] == [[0, 1, 2, 3], [4, 5]]
        for (p, _), (w, _) in zip(got[layer], want):
            torch.testing.assert_close(p, w, atol=1e-6, rtol=1e-6)
        assert len(together[layer]) == 0
        rows = torch.cat([p for p, _ in got[layer]]).reshape(steps, b, h, -1)
        for s in range(steps):
            torch.testing.assert_close(rows[s, :, :, : t0 + s + 1], reference[layer][s], atol=1e-6, rtol=1e-6)
    assert got[2][0][0].reshape(4, b, h, -1)[3, :, :, : t0 + 4 - 3].abs().sum() == 0  # the window held


def test_layers_taken_together_stay_within_the_memory_bound(monkeypatch):
    """A group never stacks more scores or key elements than `max_scores`: with room for two
    layers, four layers are computed in two groups, with the same rows as one at a time."""
    from vlmscope.capture import attention
    from vlmscope.capture.attention import DecodeRows, take_together

    g = torch.Generator().manual_seed(2)
    b, h, kv, d, t0, steps, layers = 1, 4, 2, 8, 5, 3, 4
    keys = [torch.randn(b, kv, t0 + steps, d, generator=g) for _ in range(layers)]
    queues, alone = [DecodeRows() for _ in range(layers)], [DecodeRows() for _ in range(layers)]
    for s in range(steps):
        for layer in range(layers):
            q = torch.randn(b, h, 1, d, generator=g)
            for queue in (queues[layer], alone[layer]):
                queue.add(q, keys[layer][:, :, : t0 + s + 1], None, None, step=s)
    per_layer = max(b * h * steps * (t0 + steps), b * kv * (t0 + steps) * d)
    sizes, real = [], attention._take_group

    def counted(group, max_steps):
        sizes.append(len(group))
        return real(group, max_steps)

    monkeypatch.setattr(attention, "_take_group", counted)
    got = take_together(queues, max_scores=2 * per_layer)
    assert sizes == [2, 2]
    for layer in range(layers):
        torch.testing.assert_close(got[layer][0][0], alone[layer].take()[0][0], atol=1e-6, rtol=1e-6)
