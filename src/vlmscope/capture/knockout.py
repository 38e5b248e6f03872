"""Attention knockout: chosen positions stop attending to chosen other positions, in chosen
layers, while every other entry of the model's causal mask is left as it is. Token masking and
the faithfulness curves both knock tokens out this way (one batch row per variant)."""

from __future__ import annotations

import torch


class Knockout:
    """An attention intervention (see `attention.intervening`).

    ``members[v, p]``: position p belongs to variant v's knocked-out set; ``targets[p]``: p loses
    its edges to that set (a member never loses the edge to itself or to other members);
    ``layers``: the decoder layers affected (None: all); ``eager``: the kernel takes an additive
    float mask instead of a boolean one.
    """

    def __init__(
        self, members: torch.Tensor, targets: torch.Tensor, layers: frozenset[int] | None = None, eager: bool = False
    ):
        self.members, self.targets, self.layers, self.eager = members, targets, layers, eager
        self._key: tuple[int, int, int] | None = None
        self._allowed: torch.Tensor | None = None

    def allowed(self, q_start: int, q_len: int, k_len: int) -> torch.Tensor:
        """[V, 1, q_len, k_len] bool; built once per forward and reused by every layer."""
        if self._key != (q_start, q_len, k_len):
            dev = self.members.device
            q = torch.arange(q_start, q_start + q_len, device=dev)
            causal = torch.arange(k_len, device=dev)[None, :] <= q[:, None]
            cut = self.members[:, None, :k_len] & (~self.members[:, q] & self.targets[q])[:, :, None]
            self._key, self._allowed = (q_start, q_len, k_len), (causal[None] & ~cut)[:, None]
        assert self._allowed is not None
        return self._allowed

    def edit_mask(self, module, query, key, mask):
        if self.layers is not None and module.layer_idx not in self.layers:
            return mask
        q_len, k_len = query.shape[2], key.shape[2]
        allowed = self.allowed(k_len - q_len, q_len, k_len)
        if mask is not None and mask.dtype != torch.bool:  # additive mask (eager)
            return torch.where(allowed, mask, torch.finfo(mask.dtype).min)
        if mask is not None:
            allowed = allowed & mask
        if self.eager:
            zeros = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
            return zeros.masked_fill(~allowed, torch.finfo(query.dtype).min)
        return allowed
