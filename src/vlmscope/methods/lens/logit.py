"""Logit lens: a vision token's residual stream at layer i read out through the model's own
final norm and LM head, as if the model stopped after layer i (nostalgebraist 2020).

At the last layer this is exactly the model's output distribution at that position.
"""

from __future__ import annotations

import torch

from .common import module_device


@torch.inference_mode()
def logit_top(scope, states: dict[int, torch.Tensor], k: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (probabilities [Nv, k], token ids [Nv, k])}, best first."""
    lm, head = scope.adapter.language_model, scope.adapter.lm_head
    device, dtype = module_device(head)
    out = {}
    for layer, h in states.items():
        logits = head(lm.norm(h.to(device, dtype))).float()
        p, ids = logits.softmax(-1).topk(min(k, logits.shape[-1]), dim=-1)
        out[layer] = (p.cpu(), ids.cpu())
    return out
