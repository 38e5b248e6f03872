"""Qwen2-VL: vision tower of full-attention blocks, 2x2 patch merger, mRoPE decoder."""

from typing import Any

from .adapter import Adapter
from .tiny_parts import mrope, text_config, token_ids


class Qwen2VLAdapter(Adapter):
    family = "qwen2_vl"
    display_name = "Qwen2-VL"
    hf_class = "Qwen2VLForConditionalGeneration"
    tiny_patch = 14

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
    ):
        from transformers import Qwen2VLConfig

        text = text_config(tokenizer, text_layers=text_layers, hidden=hidden, heads=heads, kv_heads=kv_heads)
        vision: dict[str, Any] = dict(
            depth=vision_depth,
            embed_dim=vision_hidden,
            hidden_size=hidden,
            num_heads=vision_heads,
            mlp_ratio=2,
            patch_size=cls.tiny_patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return Qwen2VLConfig(
            text_config={**text, "rope_scaling": mrope(hidden // heads)}, vision_config=vision, **token_ids(tokenizer)
        )

    @classmethod
    def tiny_processor_classes(cls) -> tuple[type, type]:
        from transformers import Qwen2VLProcessor, Qwen2VLVideoProcessor

        return Qwen2VLProcessor, Qwen2VLVideoProcessor
