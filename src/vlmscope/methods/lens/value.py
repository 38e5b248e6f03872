"""Value lens: what decoder layer i's attention would write, read through the LM head, into a
query that attends only to this vision token (the OV circuit of every head, summed).

The logit lens asks what the token's own stream says; the value lens asks what the token *tells
the tokens that read it*. On the bundled shapes model the two differ sharply: the stream of a
vision token inside a red object never decodes to "red" (the logit lens is at chance), but the
value it hands to layer 1's attention does, for most tokens (README, "Lenses").
"""

from __future__ import annotations

import torch

from ...errors import VlmscopeError
from .common import module_device


def value_states(scope, example, layers: list[int]):
    """({layer: stream entering that layer [Nv, D]}, token map): ``llm.embed`` for layer 0,
    ``llm.layers.{i-1}`` otherwise, from one forward."""
    sites = sorted({"llm.embed" if i == 0 else f"llm.layers.{i - 1}" for i in layers})
    trace = scope.forward(example, sites, tokens="vision")
    tm = trace.token_maps[0]
    if not tm.visuals:
        raise VlmscopeError("the example has no image: a lens reads vision tokens, give images=[...]")
    return {i: trace["llm.embed" if i == 0 else f"llm.layers.{i - 1}"][0].float() for i in layers}, tm


@torch.inference_mode()
def value_logits(scope, layer: int, h: torch.Tensor) -> torch.Tensor:
    """[N, V] logits of layer `layer`'s value readout of streams `h` (final norm, then LM head)."""
    ad = scope.adapter
    device, dtype = module_device(ad.lm_head)
    written = ad.value_readout(layer, h.to(device, dtype))
    return ad.lm_head(ad.language_model.norm(written)).float()


@torch.inference_mode()
def value_top(scope, states: dict[int, torch.Tensor], k: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (probabilities [Nv, k], token ids [Nv, k])}, best first."""
    out = {}
    for layer, h in states.items():
        logits = value_logits(scope, layer, h)
        p, ids = logits.softmax(-1).topk(min(k, logits.shape[-1]), dim=-1)
        out[layer] = (p.cpu(), ids.cpu())
    return out
