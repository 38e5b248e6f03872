"""How attention composes across layers: rollout and gradient-weighted relevancy.

Both only ever need the columns of interest (the image tokens): with M = R[:, C],
(A R)[:, C] = A M, so the state is [T, |C|] instead of [T, T].
"""

from __future__ import annotations

import torch


def rollout_step(m: torch.Tensor, attn: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """One layer of attention rollout (Abnar & Zuidema 2020): R <- ((1-r) A + r I) R.

    m: [T, C] current columns of R; attn: [T, T] head-aggregated attention (rows sum to 1).
    The residual connection is modelled by the identity term; rows stay normalised.
    """
    mixed = (1 - residual) * attn + residual * torch.eye(attn.shape[0], dtype=attn.dtype, device=attn.device)
    mixed = mixed / mixed.sum(-1, keepdim=True).clamp_min(1e-12)
    return mixed @ m


def relevancy_step(m: torch.Tensor, attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """One layer of gradient-weighted relevancy (Chefer et al. 2021): R <- R + E_h[(dy/dA * A)^+] R.

    attn, grad: [H, T, T] probabilities and the gradient of the target logit with respect to them.
    """
    weighted = (grad * attn).clamp_min(0).mean(0)
    return m + weighted @ m


def identity_columns(length: int, columns: torch.Tensor, dtype=torch.float32, device=None) -> torch.Tensor:
    """R_0 = I restricted to `columns`: [T, C]."""
    m = torch.zeros(length, len(columns), dtype=dtype, device=device)
    m[columns.to(device), torch.arange(len(columns), device=device)] = 1.0
    return m


def aggregate(x: torch.Tensor, how: str, dim: int) -> torch.Tensor:
    """mean / max / min over one dimension (heads or layers)."""
    if how == "mean":
        return x.mean(dim)
    if how == "max":
        return x.max(dim).values
    if how == "min":
        return x.min(dim).values
    from ..errors import VlmscopeError

    raise VlmscopeError(f"unknown aggregation {how!r}; choose from mean, max, min")
