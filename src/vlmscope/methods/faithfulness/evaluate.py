"""The evaluation loop: every map of every question, scored on the same questions.

Per question: one generate answers it and captures the raw attention rows of every layer (the
raw maps of every layer range and head set are read from those rows); every other method runs on
that answer; one clean run (vision tower once) then serves the deletion and insertion curves of
every map in one batch. On synthetic scenes, one more run per object finds the object the answer
relies on (`reliance`), and every map is also scored on pointing at that object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...capture.plan import CapturePlan
from ...progress import progress
from ..answer import Answer
from ..base import MapMethod
from ..masking.prefix import clean_run
from ..registry import MAP_METHODS, check_method_names
from .items import BoxItem, shapes_items
from .reliance import reliance
from .result import FaithfulnessResult
from .scoring import auc, batched_curves, centre_map, pointing_hit

if TYPE_CHECKING:
    from ...scope import Scope

BASELINES = ("random", "centre")


@dataclass
class MapSpec:
    """One row of the evaluation: a method with its options (None: a baseline)."""

    method: str
    layers: str
    heads: str
    instance: MapMethod | None = None

    @property
    def key(self) -> str:
        return f"{self.method} | {self.layers} | {self.heads}"


def map_specs(scope: Scope, methods, layer_ranges=None, heads=None) -> list[MapSpec]:
    """The rows: raw over each layer range, every other method over all layers, each
    head-reading method again with `heads` when given, then the baselines."""
    from ..registry import map_method

    n_layers = scope.adapter.num_layers
    ranges = layer_ranges or {"all": "all", "first half": f"0:{n_layers // 2}", "second half": f"{n_layers // 2}:"}
    specs = []
    for m in check_method_names(methods):
        for name, spec in ranges.items() if m == "raw" else [("all", "all")]:
            specs.append(MapSpec(m, name, "all", map_method(m, layers=spec)))
    if heads is not None:
        for m in methods:
            if MAP_METHODS[m].uses_heads:
                specs.append(MapSpec(m, "heads' layers", str(heads), map_method(m, heads=heads)))
    for inst in (s.instance for s in specs):
        assert inst is not None
        inst.check(scope)  # bad layer ranges or head specs fail before the first question
    return specs + [MapSpec(b, "-", "-") for b in BASELINES]


def evaluate(
    scope: Scope,
    n: int = 40,
    seed: int = 1000,
    methods=tuple(MAP_METHODS),
    layer_ranges=None,
    steps: int = 8,
    heads=None,
    items: list[BoxItem] | None = None,
) -> FaithfulnessResult:
    """Score map methods (and random / centre baselines) on `n` fresh shapes questions about one
    object of seed `seed` (or on `items`), the map of the answer's first token."""
    import time

    started = time.perf_counter()
    methods = check_method_names(methods)
    specs = map_specs(scope, methods, layer_ranges, heads)
    items = items if items is not None else shapes_items(n, seed)
    rng = np.random.default_rng(seed)
    capture = CapturePlan.of("llm.layers.attn", layers="all", tokens="generated", columns="vision")
    per_example = []
    for item in progress(items, desc="evaluate", unit="question"):
        answer = Answer.resolve(scope, item.example, max_new_tokens=4, capture=capture)
        visual = answer.token_map.visuals[0]
        boxes = visual.token_boxes()
        maps = {}
        for s in specs:
            if s.instance is not None:
                maps[s.key] = s.instance.attribute(scope, item.example, answer).maps[0]
            elif s.method == "random":
                maps[s.key] = rng.random(visual.num_tokens)
            else:
                maps[s.key] = centre_map(visual)
        ctx = clean_run(scope, scope.prepare(answer.prompt, with_answers=False), answer.ids)
        orders = [np.argsort(-np.asarray(v), kind="stable") for v in maps.values()]
        x, deletion, insertion = batched_curves(ctx, orders, steps)
        relied = reliance(scope, item, answer, ctx.clean_logp[0])
        scores = {
            key: {
                "pointing": float(pointing_hit(values, boxes, item.box)),
                "deletion": auc(x, deletion[i]),
                "insertion": auc(x, insertion[i]),
            }
            for i, (key, values) in enumerate(maps.items())
        }
        if relied is not None:
            assert item.scene is not None, "reliance needs the scene"
            target = item.scene.objects[relied.relied].box
            for key, values in maps.items():
                scores[key]["pointing_relied"] = float(pointing_hit(values, boxes, target))
        per_example.append(
            {
                "id": item.id,
                "question": item.example.prompt,
                "type": item.kind,
                "answer": item.answer,
                "predicted": answer.text.strip(),
                "correct": item.correct(answer.text),
                "scores": scores,
                "reliance": relied.to_dict() if relied is not None else None,
                "curves": {"x": x.tolist(), "deletion": deletion.tolist(), "insertion": insertion.tolist()},
            }
        )
    settings = {"n": len(items), "seed": seed, "steps": steps, "methods": methods, "heads": heads}
    return FaithfulnessResult.build(specs, per_example, settings, time.perf_counter() - started)
