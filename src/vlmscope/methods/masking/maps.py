"""Masking as a map method: knock each vision token out in turn and record the drop in each
answer token's log-probability (positive: the token supported the answer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...inputs import Example
from ..answer import Answer
from ..base import MapMethod, key_columns
from ..token_maps import TokenMaps
from .analysis import mask_impact

if TYPE_CHECKING:
    from ...scope import Scope


class MaskingMap(MapMethod):
    name = "masking"
    summary = "drop in the token's log-probability when each vision token is knocked out"
    uses_heads = False

    def __init__(
        self,
        layers="all",
        heads="all",
        head_agg: str = "mean",
        keep_text: bool = False,
        exclude_sinks: bool = False,
        perturbation: str = "knockout",
        edges: str = "all",
        batch_size: int = 32,
    ):
        super().__init__(layers, heads, head_agg, keep_text, exclude_sinks)
        self.perturbation, self.edges, self.batch_size = perturbation, edges, batch_size

    def options(self) -> dict:
        return {**super().options(), "perturbation": self.perturbation, "edges": self.edges}

    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        layers, heads = self.check(scope)
        mode = "both" if self.keep_text else "vision"
        result = mask_impact(
            scope,
            answer.prompt,
            answer_ids=answer.ids,
            mode=mode,
            perturbation=self.perturbation,
            window=1,
            layers=self.layers,
            edges=self.edges,
            batch_size=self.batch_size,
            label=self.name,
        )
        tm = answer.token_map
        n_images = len([v for v in tm.visuals if v.kind == "image"])
        vision = np.stack(
            [np.concatenate([result.vision_map(k, j) for k in range(n_images)]) for j in range(len(answer.ids))]
        )
        # one column per key position (vision tokens, and text tokens when kept), in sequence order
        column = {p: i for i, p in enumerate(key_columns(tm, self.keep_text).tolist())}
        cols = np.zeros((len(answer.ids), len(column)), np.float32)
        cols[:, [column[p] for p in tm.vision_positions()]] = np.nan_to_num(vision)
        for i, u in enumerate(result.units):
            if u.kind == "text":
                cols[:, column[u.positions[0]]] = [result.impact("drop", j)[i] for j in range(len(answer.ids))]
        return self._result(scope, example, answer, cols, layers, heads, "-")
