"""Qwen3-VL: absolute + rotary vision positions, and deepstack: features of a few vision blocks
go through their own mergers and are added to the image positions after LLM layers 0..k-1."""

from __future__ import annotations

from typing import Any

import torch

from ..sites import BASE_SITES, VISUAL, SiteSpec
from .adapter import Adapter
from .tiny_parts import mrope, text_config, token_ids


class Qwen3VLAdapter(Adapter):
    family = "qwen3_vl"
    display_name = "Qwen3-VL"
    hf_class = "Qwen3VLForConditionalGeneration"
    tiny_patch = 16
    sites = (
        BASE_SITES[:3]
        + (
            SiteSpec(
                "vision.deepstack.{k}",
                f"{VISUAL}.deepstack_merger_list.{{k}}",
                "post",
                "tokens",
                "decoder",
                "[Nv, D] deepstack features added to the image positions after LLM layer k",
                counts="deepstack",
            ),
        )
        + BASE_SITES[3:]
    )

    @property
    def deepstack_visual_indexes(self) -> list[int]:
        return list(getattr(self.config.vision_config, "deepstack_visual_indexes", []) or [])

    def image_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor):
        device = next(self.visual.parameters()).device
        out = self.model.model.get_image_features(pixel_values.to(device), grid_thw.to(device))
        return list(out.pooler_output), out.deepstack_features

    def decoder_kwargs(self, visual_mask: torch.Tensor, deepstack: list[torch.Tensor] | None) -> dict[str, Any]:
        if deepstack is None or not bool(visual_mask.any()):
            return {}
        return {"visual_pos_masks": visual_mask, "deepstack_visual_embeds": deepstack}

    @classmethod
    def tiny_config(
        cls,
        tokenizer,
        *,
        text_layers: int = 3,
        vision_depth: int = 2,
        hidden: int = 64,
        heads: int = 4,
        kv_heads: int = 2,
        vision_hidden: int = 32,
        vision_heads: int = 2,
        num_position_embeddings: int = 64,
    ):
        from transformers import Qwen3VLConfig

        text = text_config(tokenizer, text_layers=text_layers, hidden=hidden, heads=heads, kv_heads=kv_heads)
        head_dim = hidden // heads
        vision: dict[str, Any] = dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_heads=vision_heads,
            out_hidden_size=hidden,
            patch_size=cls.tiny_patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=num_position_embeddings,
            deepstack_visual_indexes=list(range(min(2, vision_depth))),
        )
        text3 = {**text, "head_dim": head_dim, "rope_scaling": mrope(head_dim, interleaved=True)}
        return Qwen3VLConfig(text_config=text3, vision_config=vision, **token_ids(tokenizer))

    @classmethod
    def tiny_processor_classes(cls) -> tuple[type, type]:
        from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

        return Qwen3VLProcessor, Qwen3VLVideoProcessor
