"""Attention sinks: tokens that absorb attention whatever is being generated.

A vision token is a sink when, for nearly every generated token, it receives several times the
attention of the typical vision token. Such tokens (often one or two high-norm tokens) dominate
a heatmap without saying anything about the word being produced. Excluding them sets their
weight to zero and rescales the rest of each row to the mass it had before, so maps stay
comparable across tokens.
"""

from __future__ import annotations

import numpy as np


def detect_sinks(maps: np.ndarray, factor: float = 5.0, consistency: float = 0.9) -> list[int]:
    """Columns of `maps` [n_tokens, n_vision] that hold > `factor` x the row median in at least
    `consistency` of the rows."""
    if maps.ndim != 2 or maps.shape[1] < 3:
        return []
    med = np.median(maps, axis=1, keepdims=True)
    high = maps > factor * np.maximum(med, 1e-12)
    return [int(c) for c in np.flatnonzero(high.mean(0) >= consistency)]


def exclude(maps: np.ndarray, columns: list[int]) -> np.ndarray:
    """Zero `columns` and rescale each row to its previous total."""
    if not columns:
        return maps
    out = maps.copy()
    total = out.sum(1, keepdims=True)
    out[:, columns] = 0.0
    rest = out.sum(1, keepdims=True)
    return out * np.where(rest > 0, total / np.maximum(rest, 1e-12), 0.0)
