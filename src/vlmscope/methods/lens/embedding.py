"""Embedding lens: the rows of the input embedding matrix nearest to a vision token's state by
cosine similarity, i.e. which vocabulary items the state points towards in the static input space."""

from __future__ import annotations

import torch


@torch.inference_mode()
def embedding_top(scope, states: dict[int, torch.Tensor], k: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (cosines [Nv, k], token ids [Nv, k])}, best first; an all-zero row has cosine 0."""
    emb = scope.adapter.language_model.embed_tokens.weight
    e = torch.nn.functional.normalize(emb.float(), dim=-1)
    out = {}
    for layer, h in states.items():
        cos = torch.nn.functional.normalize(h.to(e.device).float(), dim=-1) @ e.T
        s, ids = cos.topk(min(k, cos.shape[-1]), dim=-1)
        out[layer] = (s.cpu(), ids.cpu())
    return out
