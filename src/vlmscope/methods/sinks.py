"""Attention sinks: vision tokens that absorb attention whatever is being asked.

A sink is a vision token that dominates attention rows regardless of the question, so that it
says nothing about the word being produced. Being high in the answer's own rows is not enough:
a one-word answer plus the end-of-turn token gives two rows, and both point at the object the
question is about. A token is therefore excluded only when it passes two tests:

1. in this map, it holds more than ``factor`` x the row's median vision weight in at least
   ``consistency`` of the answer's rows (the candidates), and
2. on the same image(s) with a neutral prompt (``NEUTRAL_PROMPT``), the raw attention of every
   prompt-text row after the image (mean over the method's layers and heads) gives it more than
   ``factor`` x the row median in at least ``consistency`` of those rows too.

Excluding sets a sink's weight to zero and rescales the rest of each row to the mass it had
before, so maps stay comparable across tokens. ``find_sinks`` returns one reason per excluded
token, which the result keeps in ``settings["sink_reasons"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..inputs import Example
    from ..scope import Scope

NEUTRAL_PROMPT = "Describe the image."
FACTOR = 5.0
CONSISTENCY = 0.9
RULE = (
    f"a vision token is a sink when it holds > {FACTOR:g}x the row median in >= {CONSISTENCY:.0%} of the answer's "
    f"rows AND in >= {CONSISTENCY:.0%} of the raw-attention rows of the neutral prompt {NEUTRAL_PROMPT!r} "
    "on the same image(s)"
)


def _high(maps: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the fraction of rows where it exceeds `factor` x the row median, and its
    median ratio to the row median."""
    med = np.maximum(np.median(maps, axis=1, keepdims=True), 1e-12)
    return (maps > factor * med).mean(0), np.median(maps / med, axis=0)


def detect_sinks(maps: np.ndarray, factor: float = FACTOR, consistency: float = CONSISTENCY) -> list[int]:
    """Columns of `maps` [n_tokens, n_vision] that hold > `factor` x the row median in at least
    `consistency` of the rows: the candidates of test 1 (not sinks by themselves)."""
    if maps.ndim != 2 or maps.shape[1] < 3 or maps.shape[0] == 0:
        return []
    frac, _ = _high(maps, factor)
    return [int(c) for c in np.flatnonzero(frac >= consistency)]


def find_sinks(
    maps: np.ndarray, reference: np.ndarray, factor: float = FACTOR, consistency: float = CONSISTENCY
) -> dict[int, str]:
    """Sinks of `maps` [n_tokens, n_vision] confirmed by `reference` [n_rows, n_vision] (attention
    rows of a neutral prompt on the same image): {column: why it was excluded}."""
    candidates = detect_sinks(maps, factor, consistency)
    if not candidates or reference.ndim != 2 or reference.shape[0] == 0:
        return {}
    frac_a, ratio_a = _high(maps, factor)
    frac_n, ratio_n = _high(reference, factor)
    return {
        c: (
            f"vision token {c}: {ratio_a[c]:.1f}x the row median in {frac_a[c]:.0%} of the answer's "
            f"{maps.shape[0]} rows and {ratio_n[c]:.1f}x in {frac_n[c]:.0%} of {reference.shape[0]} rows "
            f"of the neutral prompt {NEUTRAL_PROMPT!r}"
        )
        for c in candidates
        if frac_n[c] >= consistency
    }


def neutral_rows(scope: Scope, example: Example, layers: list[int], heads: list[int]) -> np.ndarray:
    """[rows, Nv]: raw attention (mean over `layers` and `heads`) from the prompt-text positions
    that follow the image(s) to the vision tokens, for `NEUTRAL_PROMPT` on `example`'s visuals."""
    import torch

    from ..capture.plan import CapturePlan
    from ..inputs import Example as Ex

    neutral = Ex(NEUTRAL_PROMPT, images=list(example.images), videos=list(example.videos))
    trace = scope.forward(neutral, CapturePlan.of("llm.layers.attn", layers=layers, tokens="text", columns="vision"))
    stack = torch.stack([trace[f"llm.layers.{i}.attn"][0][heads].float() for i in layers])  # [L, h, rows, Nv]
    rows = stack.mean((0, 1)).numpy()
    return rows[rows.sum(1) > 1e-6]  # rows before the first image see no vision token


def exclude(maps: np.ndarray, columns: list[int]) -> np.ndarray:
    """Zero `columns` and rescale each row to its previous total."""
    if not columns:
        return maps
    out = maps.copy()
    total = out.sum(1, keepdims=True)
    out[:, columns] = 0.0
    rest = out.sum(1, keepdims=True)
    return out * np.where(rest > 0, total / np.maximum(rest, 1e-12), 0.0)
