"""Attention rollout (Abnar & Zuidema 2020) over a layer selection, in one teacher-forced
forward: every row of the chosen layers is read beside the kernel and streamed into a
[T, key columns] state, never a T x T matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..capture.attention import intervening, row_probabilities
from ..inputs import Example
from .answer import Answer
from .attention_flow import aggregate, identity_columns, rollout_step
from .base import MapMethod, key_columns
from .token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope


class _RolloutObserver:
    def __init__(self, layer_heads: dict[int, list[int]], head_agg, m, residual, chunk: int = 512):
        self.layer_heads, self.head_agg, self.m = layer_heads, head_agg, m
        self.residual, self.chunk = residual, chunk

    def observe(self, module, query, key, mask, scaling):
        heads = self.layer_heads.get(module.layer_idx)
        if heads is None:
            return
        t = query.shape[2]
        n_rep = query.shape[1] // key.shape[1]
        kv = [h // n_rep for h in heads]
        rows = []
        for s in range(0, t, self.chunk):  # bound the transient [H, rows, T] block
            r = torch.arange(s, min(s + self.chunk, t), device=query.device)
            p = row_probabilities(query[:, heads], key[:, kv], mask, r, scaling)[0]
            rows.append(aggregate(p, self.head_agg, dim=0))
        self.m = rollout_step(self.m, torch.cat(rows), self.residual)


class Rollout(MapMethod):
    name = "rollout"
    summary = "attention rollout with the residual term (0.5 A + 0.5 I per layer)"

    def __init__(
        self,
        layers="all",
        heads="all",
        head_agg: str = "mean",
        keep_text: bool = False,
        exclude_sinks: bool = False,
        residual: float = 0.5,
    ):
        super().__init__(layers, heads, head_agg, keep_text, exclude_sinks)
        self.residual = residual

    def options(self) -> dict:
        return {**super().options(), "residual": self.residual}

    @torch.inference_mode()
    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        layers, heads = self.check(scope)
        tm = answer.token_map
        batch = answer.batch(scope)
        state = identity_columns(tm.length, key_columns(tm, self.keep_text), device=scope.input_device)
        obs = _RolloutObserver(self.layer_heads(scope), self.head_agg, state, self.residual)
        with intervening(obs):
            scope.model(**batch.inputs, use_cache=False)
        cols: np.ndarray = obs.m[answer.rows].float().cpu().numpy()
        return self._result(scope, example, answer, cols, layers, heads, "flow")
