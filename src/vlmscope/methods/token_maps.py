"""TokenMaps: one map over the image(s) per answer token, the result of every map method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tokenmap import TokenMap, to_pixels


@dataclass
class TokenMaps:
    """What every map method returns: ``maps[j]`` is answer token j's weight on every vision token
    of the example (all visuals concatenated, raster order); ``visual_map(j, k)`` reshapes it to
    visual k's grid. ``settings`` holds the method's options."""

    method: str
    layers: list[int]
    heads: list[int]
    head_agg: str
    layer_agg: str
    token_map: TokenMap
    token_ids: list[int]
    tokens: list[str]
    answer: str
    maps: np.ndarray  # [n_tokens, Nv]
    text_maps: np.ndarray | None = None  # [n_tokens, n_text] when asked for
    sinks: list[int] = field(default_factory=list)
    layer_maps: np.ndarray | None = None  # raw: [L, n_tokens, Nv] per selected layer, heads aggregated
    images: list[Any] = field(default_factory=list, repr=False)  # PIL images / first frames, per visual
    settings: dict = field(default_factory=dict)

    def visual_map(self, j: int, visual: int = 0) -> np.ndarray:
        """[t, h, w] map of generated token j over visual k's merged token grid."""
        starts = np.cumsum([0] + [v.num_tokens for v in self.token_map.visuals])
        v = self.token_map.visual(visual)
        return self.maps[j, starts[visual] : starts[visual + 1]].reshape(v.merged_thw)

    def pixel_map(self, j: int, visual: int = 0, frame: int = 0) -> np.ndarray:
        """[H, W] map at the original image's resolution (each token fills its pixel box)."""
        return to_pixels(self.visual_map(j, visual)[frame], self.token_map.visual(visual).original_size)

    def total(self) -> np.ndarray:
        return self.maps.sum(0)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "layers": self.layers,
            "heads": self.heads,
            "head_agg": self.head_agg,
            "layer_agg": self.layer_agg,
            "answer": self.answer,
            "tokens": self.tokens,
            "token_ids": self.token_ids,
            "maps": self.maps.tolist(),
            "text_maps": None if self.text_maps is None else self.text_maps.tolist(),
            "sinks": self.sinks,
            "token_map": self.token_map.summary(),
            "settings": self.settings,
        }

    def save(self, out_dir, formats=("png", "npz", "html")) -> dict[str, str]:
        """Write the maps as pictures and arrays (drawing lives in viz/, imported on use)."""
        from ..viz.render import save_maps

        return save_maps(self, out_dir, formats)
