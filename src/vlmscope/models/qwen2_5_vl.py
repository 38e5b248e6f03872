"""Qwen2.5-VL: the vision tower runs most blocks inside attention windows, so its blocks and
merger emit merge units in window order; sites undo that permutation to raster order."""

from __future__ import annotations

from typing import Any

import torch

from ..sites import SiteSpec
from .adapter import Adapter
from .tiny_parts import mrope, text_config, token_ids


class Qwen2_5_VLAdapter(Adapter):
    family = "qwen2_5_vl"
    display_name = "Qwen2.5-VL"
    hf_class = "Qwen2_5_VLForConditionalGeneration"
    tiny_patch = 14

    def window_index(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """The tower's own window permutation of merge units for `grid_thw`."""
        from transformers.vision_utils import get_vision_window_index

        vc = self.config.vision_config
        return get_vision_window_index(
            grid_thw, spatial_merge_size=vc.spatial_merge_size, window_size=vc.window_size, patch_size=vc.patch_size
        )[0]

    def _unit(self, spec: SiteSpec) -> int:
        return self.merge_size**2 if spec.layout == "patches" else 1

    def to_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, spec: SiteSpec) -> torch.Tensor:
        if spec.order == "tower":  # window order: x_win = x.reshape(-1, unit, C)[window_index]
            unit = self._unit(spec)
            reverse = torch.argsort(self.window_index(grid_thw).to(x.device))
            x = x.reshape(-1, unit, x.shape[-1])[reverse].reshape(x.shape)
        return super().to_raster(x, grid_thw, spec)

    def from_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, spec: SiteSpec) -> torch.Tensor:
        x = super().from_raster(x, grid_thw, spec)
        if spec.order == "tower":
            unit = self._unit(spec)
            x = x.reshape(-1, unit, x.shape[-1])[self.window_index(grid_thw).to(x.device)].reshape(x.shape)
        return x

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
        from transformers import Qwen2_5_VLConfig

        text = text_config(tokenizer, text_layers=text_layers, hidden=hidden, heads=heads, kv_heads=kv_heads)
        # window 56 px = 2x2 merged tokens; the last block uses full attention.
        vision: dict[str, Any] = dict(
            depth=vision_depth,
            hidden_size=vision_hidden,
            intermediate_size=vision_hidden * 2,
            num_heads=vision_heads,
            out_hidden_size=hidden,
            patch_size=cls.tiny_patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        )
        return Qwen2_5_VLConfig(
            text_config={**text, "rope_scaling": mrope(hidden // heads)}, vision_config=vision, **token_ids(tokenizer)
        )

    @classmethod
    def tiny_processor_classes(cls) -> tuple[type, type]:
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor, Qwen2VLVideoProcessor
