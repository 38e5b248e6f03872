"""Bootstrap confidence intervals for per-question scores, and paired differences.

Every metric vlmscope reports over a sample of questions is a mean of per-question values; its
95% interval is the percentile bootstrap (Efron & Tibshirani 1993, ch. 13) over questions. Two
methods scored on the same questions are compared per question: the interval is that of the mean
of the per-question differences, which is much tighter than two overlapping marginal intervals
when the methods succeed and fail on the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import VlmscopeError


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` questions with its bootstrap interval [lo, hi] at `level`."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def excludes_zero(self) -> bool:
        """The interval lies on one side of 0: a difference outside the noise."""
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def bootstrap(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of `values` with its percentile-bootstrap interval (NaN values are dropped)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    if not 0 < level < 1:
        raise VlmscopeError(f"confidence level must lie in (0, 1), got {level}")
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Estimate(float(x.mean()), float(lo), float(hi), len(x), level)


def paired_difference(a, b, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of a - b over the same questions (a[i] and b[i] belong to question i), bootstrapped
    over questions; questions where either value is NaN are dropped."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise VlmscopeError(f"paired scores must cover the same questions: {a.shape} vs {b.shape}")
    return bootstrap(a - b, level, resamples, seed)
