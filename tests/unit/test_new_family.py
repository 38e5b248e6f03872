"""Adding a family is one adapter class and one registry line: a fake fourth family (a Qwen2-VL
variant under its own model type, with one extra site) loads and captures with no other change."""

from __future__ import annotations

import torch
from conftest import random_image
from transformers import AutoConfig, AutoModelForImageTextToText, Qwen2VLConfig, Qwen2VLForConditionalGeneration

import vlmscope
from vlmscope.models import registry
from vlmscope.models.qwen2_vl import Qwen2VLAdapter
from vlmscope.models.tiny import build_processor, build_tokenizer
from vlmscope.sites import BASE_SITES, DECODER, SiteSpec


class FakeVLConfig(Qwen2VLConfig):
    model_type = "fake_vl"


class FakeVLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    config_class = FakeVLConfig


class FakeVLAdapter(Qwen2VLAdapter):
    family = "fake_vl"
    display_name = "Fake-VL"
    hf_class = "FakeVLForConditionalGeneration"
    sites = BASE_SITES + (
        SiteSpec(
            "llm.layers.{i}.mlp",
            f"{DECODER}.layers.{{i}}.mlp",
            "post",
            "sequence",
            "layer",
            "[T, D] output of decoder layer i's MLP",
        ),
    )


def test_a_registered_fourth_family_loads_and_captures(tmp_path):
    AutoConfig.register("fake_vl", FakeVLConfig, exist_ok=True)
    AutoModelForImageTextToText.register(FakeVLConfig, FakeVLForConditionalGeneration, exist_ok=True)
    tok = build_tokenizer()
    config = FakeVLConfig(**Qwen2VLAdapter.tiny_config(tok).to_dict())
    torch.manual_seed(0)
    FakeVLForConditionalGeneration(config).save_pretrained(tmp_path / "m")
    build_processor("qwen2_vl", tok).save_pretrained(tmp_path / "m")
    registry.register(FakeVLAdapter)
    try:
        scope = vlmscope.load(tmp_path / "m", device="cpu", dtype="float32")
        assert type(scope.adapter) is FakeVLAdapter and scope.describe()["name"] == "Fake-VL"
        ex = vlmscope.Example("What colour is the circle?", images=[random_image(56, 84, 1)])
        seen = {}

        def keep(module, args, out):
            seen["mlp"] = out[0].detach().clone()

        hook = scope.adapter.language_model.layers[1].mlp.register_forward_hook(keep)
        try:
            trace = scope.forward(ex, ["vision.merger", "llm.layers.1.mlp", "llm.layers.2"])
        finally:
            hook.remove()
        torch.testing.assert_close(trace["llm.layers.1.mlp"][0], seen["mlp"])
        assert trace["vision.merger"][0].shape == (6, 64)
        maps = vlmscope.explain(scope, ex, "rollout", max_new_tokens=2)
        assert maps.maps.shape == (len(maps.token_ids), 6)
    finally:
        registry.FAMILIES.pop("fake_vl", None)
