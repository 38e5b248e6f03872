"""Qwen2.5-VL: like Qwen2-VL, but most vision blocks attend within windows, so the tower
permutes merge units into window order before block 0 and only un-permutes after the merger.
Captured blocks and merger outputs are put back into raster order here."""

from __future__ import annotations

import torch

from .adapter import Adapter


class Qwen2_5_VLAdapter(Adapter):
    family = "qwen2_5_vl"
    display_name = "Qwen2.5-VL"
    hf_class = "Qwen2_5_VLForConditionalGeneration"
    windowed = True

    def window_index(self, grid_thw: torch.Tensor) -> torch.Tensor:
        """The tower's own window permutation of merge units for `grid_thw`."""
        vis, vc = self.visual, self.config.vision_config
        if hasattr(vis, "get_window_index"):  # transformers 4.5x
            return vis.get_window_index(grid_thw)[0]
        from transformers.vision_utils import get_vision_window_index  # transformers 5.x

        return get_vision_window_index(grid_thw, spatial_merge_size=vc.spatial_merge_size,
                                       window_size=vc.window_size, patch_size=vc.patch_size)[0]

    def undo_window_order(self, x: torch.Tensor, grid_thw: torch.Tensor, unit: int) -> torch.Tensor:
        # window order: x_win = x.reshape(-1, unit, C)[window_index]; invert with argsort.
        reverse = torch.argsort(self.window_index(grid_thw).to(x.device))
        return x.reshape(-1, unit, x.shape[-1])[reverse].reshape(x.shape)
