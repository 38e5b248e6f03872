"""Window knockout: how much each answer token's next-token distribution changes (KL divergence
from the clean run) when a k x k window of vision tokens is knocked out of attention, sliding
the window one token at a time; a token's weight is the mean over the windows covering it.

Why windows and KL: an object covers several vision tokens, so knocking out one token at a time
(the `masking` method) barely moves the answer, and a drop in the answer's own probability misses
changes that move probability between other words. On held-out questions about one object of
the bundled shapes model, 2 x 2 windows scored by KL point at the asked object more often than
every attention map (docs/faithfulness.md). The runs are batched on the shared clean prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import VlmscopeError
from ..inputs import Example
from .answer import Answer
from .base import MapMethod, key_columns
from .masking.analysis import mask_impact
from .token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope

METRICS = ("kl", "drop")


class WindowKnockout(MapMethod):
    name = "windows"
    summary = "KL change of the token's distribution when each sliding 2x2 window of vision tokens is knocked out"
    uses_heads = False

    def __init__(
        self,
        layers="all",
        heads="all",
        head_agg: str = "mean",
        keep_text: bool = False,
        exclude_sinks: bool = False,
        window: int = 2,
        metric: str = "kl",
        batch_size: int = 64,
    ):
        super().__init__(layers, heads, head_agg, keep_text, exclude_sinks)
        if metric not in METRICS:
            raise VlmscopeError(f"unknown window metric {metric!r}; choose from {', '.join(METRICS)}")
        if not isinstance(window, int) or window < 1:
            raise VlmscopeError(f"bad window {window!r}; use a positive number of vision tokens per side")
        if keep_text:
            raise VlmscopeError("method 'windows' maps vision tokens only; use the masking method for text")
        self.window, self.metric, self.batch_size = window, metric, batch_size

    def options(self) -> dict:
        return {**super().options(), "window": self.window, "metric": self.metric}

    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        layers, heads = self.check(scope)
        tm = answer.token_map
        smallest = min((min(v.merged_thw[1:]) for v in tm.visuals if v.kind == "image"), default=0)
        window = max(1, min(self.window, smallest))  # a window never exceeds the image's grid
        result = mask_impact(
            scope,
            answer.prompt,
            answer_ids=answer.ids,
            mode="vision",
            window=window,
            stride=1,
            layers=self.layers,
            batch_size=self.batch_size,
            label=self.name,
        )
        n_images = len([v for v in tm.visuals if v.kind == "image"])
        maps = np.stack(
            [
                np.concatenate([result.vision_map(k, j, metric=self.metric) for k in range(n_images)])
                for j in range(len(answer.ids))
            ]
        )
        cols = np.zeros((len(answer.ids), len(key_columns(tm, False))), np.float32)
        cols[:] = np.nan_to_num(maps)
        return self._result(scope, example, answer, cols, layers, heads, "-")
