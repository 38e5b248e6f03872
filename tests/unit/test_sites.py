"""Every captured site against an independent reference computed by transformers itself."""

from __future__ import annotations

import pytest
import torch

from vlmscope import Example


def _examples(images):
    # two examples of different lengths: one image, then two images and a longer prompt
    return [
        Example("What colour is the circle?", images=[images[0]]),
        Example("Is there a red square in one of these pictures?", images=[images[1], images[2]]),
    ]


def _next_module_inputs(adapter, inputs):
    """Raw torch hooks, not vlmscope's: what each of layers[1:], norm receives."""
    lm = adapter.language_model
    chain = list(lm.layers)[1:] + [lm.norm]
    got, handles = {}, []
    for i, m in enumerate(chain):
        handles.append(
            m.register_forward_pre_hook(
                lambda mod, args, kwargs, i=i: got.__setitem__(
                    i, (args[0] if args else kwargs["hidden_states"]).clone()
                ),
                with_kwargs=True,
            )
        )
    try:
        with torch.no_grad():
            out = adapter.model(**inputs, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    return out, got


def test_llm_sites_match_transformers(scopes, family, images):
    scope = scopes[family]
    batch = scope.prepare(_examples(images))
    ref, received = _next_module_inputs(scope.adapter, scope.prepare(_examples(images)).inputs)
    hs = ref.hidden_states
    n = scope.adapter.num_layers
    trace = scope.forward(batch, ["llm.embed", "llm.layers", "llm.layers.pre_deepstack", "llm.norm", "logits"])
    injected = set(range(scope.adapter.num_deepstack))
    for b, pad in enumerate(batch.pad):
        torch.testing.assert_close(trace["llm.embed"][b], hs[0][b, pad:])
        for i in range(n):
            # the stream layer i+1 (or the final norm) receives
            torch.testing.assert_close(trace[f"llm.layers.{i}"][b], received[i][b, pad:])
            if i < n - 1:
                torch.testing.assert_close(trace[f"llm.layers.{i}.pre_deepstack"][b], hs[i + 1][b, pad:])
                if i not in injected:
                    torch.testing.assert_close(trace[f"llm.layers.{i}"][b], hs[i + 1][b, pad:])
        torch.testing.assert_close(trace["llm.norm"][b], hs[n][b, pad:])
        torch.testing.assert_close(trace["logits"][b], ref.logits[b, pad:])
    if family == "qwen3_vl":
        # deepstack really changes the stream at the image positions, and only there
        vis = batch.token_maps[0].vision_positions()
        diff = (trace["llm.layers.0"][0] - trace["llm.layers.0.pre_deepstack"][0]).abs().sum(-1)
        assert diff[vis].min() > 0 and diff[[p for p in range(len(diff)) if p not in vis]].max() == 0


def test_vision_merger_matches_image_features(scopes, family, images):
    scope = scopes[family]
    batch = scope.prepare(_examples(images))
    trace = scope.forward(batch, ["vision.merger"])
    with torch.no_grad():
        feats = scope.model.model.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
    feats = getattr(feats, "pooler_output", feats)
    feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
    torch.testing.assert_close(torch.cat(trace["vision.merger"]), feats)
    assert [t.shape[0] for t in trace["vision.merger"]] == [len(tm.vision_positions()) for tm in batch.token_maps]


def test_deepstack_sites_are_what_the_decoder_adds(scopes, images):
    scope = scopes["qwen3_vl"]
    batch = scope.prepare(_examples(images)[:1])
    trace = scope.forward(batch, ["vision.deepstack", "llm.layers.pre_deepstack", "llm.layers"], layers="0,1")
    vis = batch.token_maps[0].vision_positions()
    for k in range(scope.adapter.num_deepstack):
        added = trace[f"llm.layers.{k}"][0][vis] - trace[f"llm.layers.{k}.pre_deepstack"][0][vis]
        torch.testing.assert_close(added, trace[f"vision.deepstack.{k}"][0])


@pytest.mark.parametrize(
    "tokens,reduce",
    [("vision", "mean"), ("vision_last", "none"), ("query", "none"), ("text", "max"), ("image:1", "last")],
)
def test_selection_and_reduction(scopes, images, tokens, reduce):
    scope = scopes["qwen2_vl"]
    batch = scope.prepare(_examples(images)[1:])
    full = scope.forward(batch, ["llm.layers.1"])["llm.layers.1"][0]
    got = scope.forward(batch, ["llm.layers.1"], tokens=tokens, reduce=reduce)
    tm = batch.token_maps[0]
    pos = {
        "vision": tm.vision_positions(),
        "vision_last": tm.vision_positions()[-1:],
        "query": [tm.query],
        "text": tm.text_positions(),
        "image:1": tm.vision_positions(1),
    }[tokens]
    rows = full[pos]
    want = {"none": rows, "mean": rows.mean(0), "max": rows.max(0).values, "last": rows[-1]}[reduce]
    torch.testing.assert_close(got["llm.layers.1"][0], want)
    assert got.positions["llm.layers.1"][0] == pos


def test_generate_captures_prefill_and_decode_steps(scopes, images):
    scope = scopes["qwen2_5_vl"]
    exs = _examples(images)
    trace = scope.generate(exs, ["llm.layers.2", "llm.norm"], tokens="generated", max_new_tokens=4)
    for b, tm in enumerate(trace.token_maps):
        gen = trace.generated_ids[b]
        assert tm.input_ids[tm.answer[0] : tm.answer[1]] == gen
        assert trace.positions["llm.norm"][b] == tm.predicting_positions(len(gen))
        # teacher-forced forward over prompt + generated tokens gives the same states
        ref = scope.forward(Example(exs[b].prompt, images=exs[b].images), ["llm.norm"])
        ids = tm.input_ids
        mm = [[1 if t == scope.adapter.token_ids["image"] else 0 for t in ids]]
        pixels = {k: v for k, v in scope.prepare(exs[b]).inputs.items() if k.startswith(("pixel", "image_grid"))}
        with torch.no_grad():
            forced = scope.model(
                input_ids=torch.tensor([ids]), mm_token_type_ids=torch.tensor(mm), **pixels, output_hidden_states=True
            )
        torch.testing.assert_close(
            trace["llm.norm"][b], forced.hidden_states[-1][0, tm.predicting_positions(len(gen))], atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(ref["llm.norm"][0][tm.query], trace["llm.norm"][b][0], atol=1e-5, rtol=1e-5)
