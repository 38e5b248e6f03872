"""Bootstrap intervals: coverage of a known mean, and paired differences taken per question."""

from __future__ import annotations

import numpy as np
import pytest

from vlmscope.errors import VlmscopeError
from vlmscope.stats import bootstrap, paired_difference


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = [bootstrap(rng.random(60) < 0.7, resamples=500, seed=i).contains(0.7) for i in range(300)]
    # binomial(300, 0.95): 0.92..0.98 holds with > 99% probability; the percentile bootstrap of a
    # proportion at n=60 is slightly liberal, so allow down to 0.90
    assert 0.90 <= np.mean(covered) <= 0.99


def test_bootstrap_width_matches_the_normal_approximation():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=400)
    e = bootstrap(x, resamples=4000)
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert e.mean == pytest.approx(x.mean())
    assert (e.hi - e.lo) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert e.n == 400 and e.lo < e.mean < e.hi


def test_paired_difference_is_taken_per_question():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 5, size=100)  # questions differ a lot; methods differ by 0.1 on each
    a, b = base + 0.1 + rng.normal(0, 0.01, 100), base
    d = paired_difference(a, b)
    assert d.excludes_zero() and d.contains(0.1)
    # the unpaired view: two marginal intervals that overlap almost entirely
    ea, eb = bootstrap(a), bootstrap(b)
    assert ea.lo < eb.hi and eb.lo < ea.hi
    # shuffling one side breaks the pairing and the difference disappears into the noise
    assert not paired_difference(a, rng.permutation(b)).excludes_zero()


def test_bad_inputs():
    with pytest.raises(VlmscopeError, match="same questions"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(VlmscopeError, match="level"):
        bootstrap([1, 2], level=95)
    assert bootstrap([]).n == 0 and bootstrap([np.nan, 1.0]).n == 1
