"""Raw attention maps: the attention of the row that produced each answer token.

The rows are captured during the same generate that produces the answer (the model keeps SDPA;
only vision, and text when asked, key columns are kept), or in one teacher-forced forward when
the answer was produced without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..capture.plan import CapturePlan
from ..errors import VlmscopeError
from ..inputs import Example
from .answer import Answer
from .attention_flow import aggregate
from .base import MapMethod, key_columns
from .heads import is_pairs
from .token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope


class RawAttention(MapMethod):
    name = "raw"
    summary = "attention of each token's predicting row, layers x heads aggregated"

    def __init__(
        self,
        layers="all",
        heads="all",
        head_agg: str = "mean",
        layer_agg: str = "mean",
        keep_text: bool = False,
        exclude_sinks: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(layers, heads, head_agg, keep_text, exclude_sinks)
        if layer_agg not in ("mean", "max", "min"):
            raise VlmscopeError(f"unknown layer aggregation {layer_agg!r}; choose from mean, max, min")
        self.layer_agg, self.dtype = layer_agg, dtype

    def options(self) -> dict:
        return {**super().options(), "layer_agg": self.layer_agg}

    def capture_plan(self, scope: Scope) -> CapturePlan:
        layers, _ = self.check(scope)
        return CapturePlan.of(
            "llm.layers.attn", layers=layers, tokens="generated", columns="vision+text" if self.keep_text else "vision"
        )

    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        layers, heads = self.check(scope)
        tm = answer.token_map
        width = len(key_columns(tm, self.keep_text))
        trace = answer.trace
        sites = [f"llm.layers.{i}.attn" for i in layers]
        if trace is None or not all(s in trace and trace[s][0].shape[-1] == width for s in sites):
            trace = scope.forward(answer.batch(scope), self.capture_plan(scope), dtype=self.dtype)
        chosen = self.layer_heads(scope)
        rows = [trace[f"llm.layers.{i}.attn"][0][chosen[i]].float() for i in layers]  # per layer [h_i, n, C]
        per_layer = torch.stack([aggregate(r, self.head_agg, dim=0) for r in rows])  # [L, n, C]
        if is_pairs(self.heads):  # layer.head pairs: every pair counts once
            cols = aggregate(torch.cat(rows), self.head_agg, dim=0).numpy()
        else:
            cols = aggregate(per_layer, self.layer_agg, dim=0).numpy()  # [n, C]
        result = self._result(scope, example, answer, cols, layers, heads, self.layer_agg)
        vision = set(tm.vision_positions())
        vis_idx = [i for i, p in enumerate(key_columns(tm, self.keep_text).tolist()) if p in vision]
        result.layer_maps = per_layer.numpy()[:, :, vis_idx]
        return result
