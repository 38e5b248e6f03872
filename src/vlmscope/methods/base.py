"""The map-method interface: one class per method, one `attribute(scope, example, answer)`.

A method explains an `Answer` (resolved once by the caller) with one map over the image(s) per
answer token. The CLI, the run report, the faithfulness evaluation and the app find methods in
`registry.MAP_METHODS`; adding a method is one class here-alike and one registry line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from ..capture.plan import CapturePlan
from ..errors import VlmscopeError
from ..inputs import Example, load_image
from ..specs import parse_layers
from ..tokenmap import TokenMap
from . import sinks as sink_tools
from .answer import Answer
from .token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope


def key_columns(tm: TokenMap, keep_text: bool) -> torch.Tensor:
    """Sorted key positions a map keeps: the vision tokens, and the prompt's text when asked."""
    pos = tm.vision_positions() + (tm.text_positions() if keep_text else [])
    return torch.tensor(sorted(pos), dtype=torch.long)


class MapMethod:
    """Base of every map method. Options shared by all: ``layers`` (decoder layer spec),
    ``heads`` (a head spec, layer.head pairs or a heads.json; see methods.heads), ``head_agg``
    (mean/max/min over heads), ``keep_text`` (also return
    the weight of the prompt's text tokens), ``exclude_sinks`` (zero attention-sink tokens)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line: the CLI's help and the report's legend
    uses_heads: ClassVar[bool] = True

    def __init__(
        self, layers="all", heads="all", head_agg: str = "mean", keep_text: bool = False, exclude_sinks: bool = False
    ):
        if head_agg not in ("mean", "max", "min"):
            raise VlmscopeError(f"unknown aggregation {head_agg!r}; choose from mean, max, min")
        self.layers, self.heads, self.head_agg = layers, heads, head_agg
        self.keep_text, self.exclude_sinks = keep_text, exclude_sinks

    def check(self, scope: Scope) -> tuple[list[int], list[int]]:
        """Resolve layers and heads against the model; errors name the valid range. With
        layer.head pairs (``heads="1.3,0.2"`` or a heads.json), the layers are the pairs' layers
        and the heads every head that any pair names (`layer_heads` has them per layer)."""
        per_layer = self.layer_heads(scope)
        heads = sorted({h for hs in per_layer.values() for h in hs})
        if not self.uses_heads and len(heads) != scope.adapter.num_heads:
            raise VlmscopeError(f"method {self.name!r} does not read attention heads; leave heads at 'all'")
        return list(per_layer), heads

    def layer_heads(self, scope: Scope) -> dict[int, list[int]]:
        """{layer: heads read in that layer}, from ``layers`` and ``heads`` (see methods.heads)."""
        from .heads import head_pairs

        ad = scope.adapter
        pairs = head_pairs(self.heads, ad.num_layers, ad.num_heads)
        if pairs is None:
            heads = parse_layers(self.heads, ad.num_heads, "head")
            return {layer: heads for layer in parse_layers(self.layers, ad.num_layers)}
        if str(self.layers).strip() != "all":
            raise VlmscopeError(
                f"give layers or layer.head pairs, not both (layers {self.layers!r}, heads {self.heads!r})"
            )
        return pairs

    def capture_plan(self, scope: Scope) -> CapturePlan | None:
        """What this method would like captured during the generate that produces the answer."""
        return None

    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        raise NotImplementedError

    def options(self) -> dict:
        return {
            "layers": self.layers,
            "heads": self.heads,
            "head_agg": self.head_agg,
            "keep_text": self.keep_text,
            "exclude_sinks": self.exclude_sinks,
        }

    def _result(
        self,
        scope: Scope,
        example: Example,
        answer: Answer,
        cols: np.ndarray,
        layers: list[int],
        heads: list[int],
        layer_agg: str,
    ) -> TokenMaps:
        """TokenMaps from [n_tokens, key columns] weights over `key_columns(tm, keep_text)`."""
        _need_visual(example)
        tm = answer.token_map
        vision = set(tm.vision_positions())
        keys = key_columns(tm, self.keep_text).tolist()
        vis_idx = [i for i, p in enumerate(keys) if p in vision]
        text_idx = [i for i, p in enumerate(keys) if p not in vision]
        maps = cols[:, vis_idx]
        reasons = self._sinks(scope, example, maps, layers, heads) if self.exclude_sinks else {}
        found = sorted(reasons)
        maps = sink_tools.exclude(maps, found)
        images = [load_image(i) for i in example.images] + [load_image(v[0]) for v in example.videos]
        return TokenMaps(
            method=self.name,
            layers=list(layers),
            heads=list(heads),
            head_agg=self.head_agg,
            layer_agg=layer_agg,
            token_map=tm,
            token_ids=list(answer.ids),
            tokens=list(answer.tokens),
            answer=answer.text,
            maps=maps,
            text_maps=cols[:, text_idx] if self.keep_text else None,
            sinks=found,
            images=images,
            settings={
                "method": self.name,
                **self.options(),
                **({"sink_reasons": reasons} if self.exclude_sinks else {}),
            },
        )

    def _sinks(self, scope: Scope, example: Example, maps: np.ndarray, layers, heads) -> dict[int, str]:
        """{vision column: reason} of the attention sinks in `maps` (rule: methods/sinks.py)."""
        if not sink_tools.detect_sinks(maps):  # no candidate: no neutral forward needed
            return {}
        all_heads = list(range(scope.adapter.num_heads))
        reference = sink_tools.neutral_rows(scope, example, list(layers), list(heads) or all_heads)
        return sink_tools.find_sinks(maps, reference)


def _need_visual(example: Example) -> None:
    if not (example.images or example.videos):
        raise VlmscopeError("map methods need an image or video in the example")
