"""Per-question scores of one map: pointing game, deletion and insertion curves, baselines.

The curves knock vision tokens out of attention in every layer (the model's causal mask otherwise
unchanged), so Qwen3-VL's deepstack features at a knocked-out position cannot leak either. Every
variant of every map of one question runs in one batch on the clean run of that question
(`masking.prefix`): the vision tower runs once, the positions before the first vision token come
from the clean KV cache, and only the positions from the image on are recomputed per variant.
"""

from __future__ import annotations

import numpy as np
import torch

from ...capture.attention import intervening
from ...capture.knockout import Knockout
from ..masking.prefix import CleanRun, log_probs, new_cache, run_decoder


def pointing_hit(scores: np.ndarray, boxes: np.ndarray, target, tolerance: float = 0.5) -> bool:
    """Does the centre of the top-scoring token fall inside `target` (grown by `tolerance` tokens)?"""
    j = int(np.argmax(scores))
    x0, y0, x1, y1 = boxes[j]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    gx, gy = (x1 - x0) * tolerance, (y1 - y0) * tolerance
    tx0, ty0, tx1, ty1 = target
    return bool(tx0 - gx <= cx <= tx1 + gx and ty0 - gy <= cy <= ty1 + gy)


def spatial_entropy(scores: np.ndarray) -> float:
    """Shannon entropy of the map as a distribution over its tokens, divided by log(#tokens):
    0 = all weight on one token, 1 = uniform. Negative weights count as 0."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
    if len(p) < 2 or p.sum() <= 0:
        return 1.0
    p = p / p.sum()
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(len(p)))


def centre_map(visual) -> np.ndarray:
    _, h, w = visual.merged_thw
    ys, xs = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    return np.exp(-(xs**2 + ys**2) / (2 * (max(h, w) / 4) ** 2)).reshape(-1)


def auc(x: np.ndarray, y: np.ndarray) -> float:
    if hasattr(np, "trapezoid"):
        return float(np.trapezoid(y, x))
    return float(np.trapz(y, x))  # type: ignore[attr-defined,unused-ignore]  # numpy 1.x only


def curve_steps(n_vision: int, steps: int) -> np.ndarray:
    """The numbers of tokens removed (deletion) or kept (insertion) at each point of a curve."""
    return np.unique(np.linspace(0, n_vision, steps + 1).round().astype(int))


def curve_members(tm, orders: list[np.ndarray], ks: np.ndarray) -> torch.Tensor:
    """[2 * len(orders) * len(ks), T] knocked-out positions: per map, the deletion variants (the
    k most important go) then the insertion variants (only the k most important stay)."""
    vis = np.asarray(tm.vision_positions())
    members = torch.zeros(2 * len(orders) * len(ks), tm.length, dtype=torch.bool)
    row = 0
    for order in orders:
        for k in ks:
            members[row, vis[order[:k]]] = True
            row += 1
        for k in ks:
            members[row, vis[order[k:]]] = True
            row += 1
    return members


@torch.inference_mode()
def batched_curves(
    ctx: CleanRun, orders: list[np.ndarray], steps: int, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x [K], deletion [M, K], insertion [M, K]): P(first answer token) along each map's curves,
    for M maps given as orders over the example's vision tokens (most important first)."""
    tm, scope = ctx.tm, ctx.scope
    vis = tm.vision_positions()
    ks = curve_steps(len(vis), steps)
    members = curve_members(tm, orders, ks).to(ctx.ids.device)
    start = min(vis)  # nothing before the first vision token changes
    targets = torch.ones(ctx.length, dtype=torch.bool, device=ctx.ids.device)
    image_rows = [p for p in range(start, ctx.length) if bool(ctx.visual[p])]
    row = ctx.rows[0] - start
    probs = []
    for s in range(0, len(members), batch_size):
        chunk = members[s : s + batch_size]
        v = len(chunk)
        embeds = ctx.embeds[:, start:].expand(v, -1, -1)
        deep = None
        if ctx.deepstack is not None:
            idx = ctx.visual_rows(image_rows)
            deep = [lv[idx][None].expand(v, -1, -1).reshape(-1, lv.shape[-1]) for lv in ctx.deepstack]
        editor = Knockout(chunk, targets, None, eager=scope.attn_base == "eager")
        with intervening(editor):
            hidden = run_decoder(ctx, embeds, start, new_cache(scope, ctx, start, v), deep)
        logp = log_probs(scope, hidden[:, [row]])[:, 0, int(ctx.answer[0])]
        probs.append(logp.exp().cpu())
    p = torch.cat(probs).numpy().reshape(len(orders), 2, len(ks))
    return ks / len(vis), p[:, 0], p[:, 1]
