"""Gradient-weighted attention relevancy (Chefer et al. 2021): R += E_h[(dy/dA * A)+] R per
layer, y = the answer token's logit. One forward with eager, differentiable attention on the
selected layers only (the others keep their kernel), then one gradient per answer token."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..capture.attention import EagerLayers, intervening
from ..inputs import Example
from ..progress import progress
from .answer import Answer
from .attention_flow import identity_columns, relevancy_step
from .base import MapMethod, key_columns
from .token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope


class GradientRelevancy(MapMethod):
    name = "gradient"
    summary = "gradient-weighted relevancy: R += E_h[(dy/dA * A)+] R per layer"

    def attribute(self, scope: Scope, example: Example, answer: Answer) -> TokenMaps:
        layers, heads = self.check(scope)
        chosen = self.layer_heads(scope)
        tm = answer.token_map
        batch = answer.batch(scope)
        cols_idx = key_columns(tm, self.keep_text)
        eager = EagerLayers(layers)
        first = scope.adapter.decoder_chain()[0]
        # make the graph start at the decoder input, whether or not the weights require grad
        handle = first.register_forward_pre_hook(
            lambda mod, args, kwargs: ((args[0].detach().requires_grad_(True),) + args[1:], kwargs) if args else None,
            with_kwargs=True,
        )
        try:
            with torch.enable_grad(), intervening(eager):
                logits = scope.model(**batch.inputs, use_cache=False).logits[0]
        finally:
            handle.remove()
        probs = [eager.probs[i] for i in layers]
        rows = answer.rows
        out = []
        steps = progress(zip(rows, answer.ids), total=len(rows), desc="gradient", unit="token")
        for j, (row, tok) in enumerate(steps):
            grads = torch.autograd.grad(logits[row, tok], probs, retain_graph=j < len(rows) - 1)
            m = identity_columns(tm.length, cols_idx, device=logits.device)
            for layer, p, g in zip(layers, probs, grads):
                hs = chosen[layer]
                m = relevancy_step(m, p[0, hs].detach().float(), g[0, hs].float())
            out.append(m[row].detach().cpu().numpy())
        cols: np.ndarray = np.stack(out)
        return self._result(scope, example, answer, cols, layers, heads, "flow")
