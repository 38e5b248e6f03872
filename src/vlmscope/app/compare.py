"""Cross-model comparison: the same example on several models, answers side by side, and the maps
of the tokens the answers share in one row per token.

Models of different families or sizes have different token grids; every map is drawn over the
pixels its tokens cover, so the cells of a row line up on the image. With ``same_answer`` every
model explains the first model's answer (teacher-forced), so the rows are that answer's words.
Used by the app's Compare tab and by `vlmscope compare`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..inputs import Example, load_image
from ..limits import ANSWER_TOKENS
from ..methods.answer import Answer
from ..methods.token_maps import TokenMaps
from .maps import MapSettings, Run, capture_plan, render, shared_tokens, token_maps

if TYPE_CHECKING:
    from ..scope import Scope

_SPECIAL = re.compile(r"^<\|.*\|>$")


@dataclass
class Comparison:
    prompt: str
    settings: MapSettings
    same_answer: bool
    runs: list[Run]
    maps: list[TokenMaps]
    rows: list[tuple[str, list[int]]]  # shared token, its index in each answer

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "method": self.settings.method,
            "same_answer": self.same_answer,
            "models": [r.model for r in self.runs],
            "answers": [r.answer.text for r in self.runs],
            "tokens": [r.tokens for r in self.runs],
            "rows": [{"token": t, "indices": idx} for t, idx in self.rows],
            "maps": {t: [m.maps[j].tolist() for m, j in zip(self.maps, idx)] for t, idx in self.rows},
        }


def compare(
    models: dict[str, Scope],
    example: Example,
    frames: list[list[Image.Image]] | None = None,
    settings: MapSettings | None = None,
    same_answer: bool = False,
    max_new_tokens: int = ANSWER_TOKENS,
    locks: dict | None = None,
) -> Comparison:
    """Answer `example` with every model (or teacher-force the first model's answer on the others
    when `same_answer`) and map every answer with `settings` (ranges clipped to each model)."""
    settings = settings or MapSettings()
    if frames is None:  # paths or PIL images, opened as the model reads them
        frames = [[load_image(im)] for im in example.images] + [[load_image(f) for f in v] for v in example.videos]
    runs, maps = [], []
    first: str | None = None
    for name, scope in models.items():
        lock = (locks or {}).get(name) or contextlib.nullcontext()
        ex = replace(example, answer=first) if same_answer and first is not None else example
        plan = capture_plan(scope) if settings.method == "raw" else None
        with lock:
            answer = Answer.resolve(scope, ex, max_new_tokens, capture=plan)
        first = answer.text if first is None else first
        run = Run(name, scope, ex, answer, frames)
        runs.append(run)
        maps.append(token_maps(run, _fit(settings, scope), lock=(locks or {}).get(name)))
    skip = frozenset(t.strip().lower() for r in runs for t in r.tokens if _SPECIAL.match(t.strip()))
    rows = shared_tokens([r.tokens for r in runs], skip)
    return Comparison(example.prompt, settings, same_answer, runs, maps, rows)


def _fit(settings: MapSettings, scope: Scope) -> MapSettings:
    """Clip layer and head ranges to a model (models of different depths share one setting)."""
    ad = scope.adapter

    def clip(bounds: tuple[int, int], n: int) -> tuple[int, int]:
        lo, hi = (n + b if b < 0 else b for b in bounds)
        return min(max(lo, 0), n - 1), min(max(hi, 0), n - 1)

    return replace(settings, layers=clip(settings.layers, ad.num_layers), heads=clip(settings.heads, ad.num_heads))


def comparison_html(
    comp: Comparison, cmap: str | None = None, alpha: float = 0.75, height: int = 192, standalone: bool = True
) -> str:
    """The comparison as one self-contained page (images embedded): answers, then one row per
    shared token with each model's map over the pixels, then each model's provenance."""
    from ..viz.page import data_uri
    from ..viz.page import render as render_page

    models = []
    for run, m in zip(comp.runs, comp.maps):
        grids = ", ".join("x".join(str(d) for d in v.merged_thw) for v in run.answer.token_map.visuals)
        prov = run.scope.provenance
        prov_dict = prov.to_dict() if hasattr(prov, "to_dict") else {"source": str(prov)}
        models.append(
            {
                "name": run.model,
                "family": type(run.scope.adapter).__name__.replace("Adapter", ""),
                "grid": grids,
                "read": _what_was_read(m),
                "answer": run.answer.text,
                "provenance": {k: "-" if v is None or v == "" else v for k, v in prov_dict.items()},
            }
        )
    rows = []
    for token, idx in comp.rows:
        cells = []
        for run, m, j in zip(comp.runs, comp.maps, idx):
            img = render(m, run, j, 0, cmap, alpha, "overlay", height)
            cells.append({"uri": data_uri(img), "model": run.model, "index": j, "max": f"{np.nanmax(m.maps[j]):.3g}"})
        rows.append({"token": token, "cells": cells})
    return render_page(
        "compare.html.j2",
        prompt=comp.prompt,
        method=comp.settings.method,
        settings=None,
        same_answer=comp.same_answer,
        models=models,
        rows=rows,
        height=height,
        standalone=standalone,
    )


def _what_was_read(maps: TokenMaps) -> str:
    """The layers (and heads) a model's maps were computed from, as the page says it."""

    def span(xs: list[int]) -> str:
        return "-" if not xs else str(xs[0]) if len(xs) == 1 else f"{xs[0]}-{xs[-1]}"

    heads = f" · heads {span(maps.heads)} ({maps.head_agg})" if maps.heads else ""
    return f"layers {span(maps.layers)}{heads}"


def peer_model(out_dir, family: str = "qwen2_5_vl", seed: int = 0):
    """Save a tiny random `family` model that shares the bundled model's tokenizer under `out_dir`:
    a second model to try comparisons with offline (its answers are noise; its token grid differs)."""
    from transformers import AutoTokenizer

    from ..assets import bundled_model_dir
    from ..models.tiny import build_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    return build_tiny_model(family, out_dir, seed=seed, tokenizer=tokenizer)
