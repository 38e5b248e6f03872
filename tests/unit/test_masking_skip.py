"""Knockout runs start at the first row that loses an edge, and units that cannot change a scored
row are not run: scores equal the plain model with a hand-built mask, and skipped units are zero."""

from __future__ import annotations

import numpy as np
import torch
from test_masking import _example, _knockout_mask, _reference

from vlmscope.methods.masking import mask_impact
from vlmscope.methods.masking.perturbations import knocked_from


def test_knocked_from_is_the_first_target_after_the_unit(scopes):
    from vlmscope.methods.masking import Unit

    targets = torch.tensor([False, True, True, False, True, True])
    assert knocked_from(Unit("vision", "v", (1, 2), image=0), targets) == 4  # members keep their edges
    assert knocked_from(Unit("text", "w", (5,)), targets) is None  # nothing after it
    assert knocked_from(Unit("text", "w", (0,)), targets) == 1


def test_units_after_every_target_are_zero_and_the_rest_match_the_model(scopes, family):
    scope = scopes[family]
    ex = _example(scope)
    result = mask_impact(scope, ex, mode="both", text_unit="word", edges="vision")
    tm = scope.prepare(ex).token_maps[0]
    targets = torch.zeros(tm.length, dtype=torch.bool)
    targets[tm.vision_positions()] = True
    after = [i for i, u in enumerate(result.units) if u.first > max(tm.vision_positions())]
    assert after and np.all(result.delta_logprob[after] == 0) and np.all(result.kl[after] == 0)
    n = scope.adapter.num_layers
    for i in (0, len(result.units) // 2, after[-1]):
        knocked = _knockout_mask(tm.length, result.units[i], targets)
        want = _reference(scope, ex, [knocked] * n).numpy()
        np.testing.assert_allclose(result.clean_logprobs + result.delta_logprob[i], want, atol=2e-5)
