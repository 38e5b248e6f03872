"""The perturbations, and the batched runs that score them.

A chunk of units becomes a batch of variants of one example. Every variant starts at the chunk's
first changed position on a shared slice of the clean KV cache, and one teacher-forced pass
scores the whole answer: the log-probability of each answer token and the KL divergence of each
next-token distribution from the clean one.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ..capture.attention import MaskEditing
from ..errors import VlmscopeError
from .masking_context import Context, log_probs, new_cache, run_decoder, vision_features
from .masking_units import Unit

METHODS = ("knockout", "zero", "mean", "noise", "occlude")
EMBEDDING_METHODS = ("zero", "mean", "noise")
EDGES = ("all", "vision", "question", "last")
OCCLUSIONS = ("grey", "blur")


@dataclass(frozen=True)
class Perturbation:
    """How a unit is masked. ``layers`` and ``edges`` apply to knockout only (None: every layer)."""

    method: str = "knockout"
    layers: frozenset[int] | None = None
    edges: tuple[str, ...] = ("all",)
    occlusion: str = "grey"
    seed: int = 0


class Knockout:
    """MaskEditing editor: in the chosen layers, a target position never attends to the positions of
    its variant's unit; every other entry of the causal mask is left as it is.

    ``members[v, p]``: position p belongs to variant v's unit; ``targets[p]``: p loses its edges.
    """

    def __init__(self, members: torch.Tensor, targets: torch.Tensor, layers: frozenset[int] | None, eager: bool):
        self.members, self.targets, self.layers, self.eager = members, targets, layers, eager
        self._key, self._allowed = None, None

    def allowed(self, q_start: int, q_len: int, k_len: int) -> torch.Tensor:
        """[V, 1, q_len, k_len] bool; built once per forward and reused by every layer."""
        if self._key != (q_start, q_len, k_len):
            dev = self.members.device
            q = torch.arange(q_start, q_start + q_len, device=dev)
            causal = torch.arange(k_len, device=dev)[None, :] <= q[:, None]
            cut = self.members[:, None, :k_len] & (~self.members[:, q] & self.targets[q])[:, :, None]
            self._key, self._allowed = (q_start, q_len, k_len), (causal[None] & ~cut)[:, None]
        return self._allowed

    def __call__(self, module, query, key, mask):
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


def edge_targets(ctx: Context, edges: tuple[str, ...], length: int) -> torch.Tensor:
    """[length] bool: the positions whose attention to a unit is cut, from named edge sets."""
    tm, dev = ctx.tm, ctx.ids.device
    out = torch.zeros(length, dtype=torch.bool, device=dev)
    for e in edges:
        if e == "all":
            out[:] = True
        elif e == "vision":
            out[tm.vision_positions()] = True
        elif e == "question":
            out[tm.text_positions()] = True
        elif e == "last":
            out[tm.query:] = True
        else:
            raise VlmscopeError(f"unknown edge set {e!r}; choose from {', '.join(EDGES)}")
    return out


def first_changed(ctx: Context, units: list[Unit], method: str) -> int:
    """The first position whose state differs from the clean run in any variant of the chunk."""
    if method == "occlude":  # the vision tower mixes the whole image: every token of it changes
        return min(ctx.tm.visuals[u.image].positions[0] for u in units)
    return min(u.first for u in units)


def _replacement(ref: torch.Tensor, n: int, method: str, seed: int) -> torch.Tensor:
    """[n, D] values for `method` from reference rows `ref`: zeros, their mean, or Gaussian noise with
    their per-channel mean and spread (a fixed seed per unit)."""
    if method == "zero":
        return torch.zeros(n, ref.shape[-1], dtype=ref.dtype, device=ref.device)
    mean = ref.float().mean(0)
    if method == "mean":
        return mean.to(ref.dtype).expand(n, -1)
    std = ref.float().std(0) if ref.shape[0] > 1 else torch.zeros_like(mean)
    noise = torch.randn(n, ref.shape[-1], generator=torch.Generator().manual_seed(seed)).to(ref.device)
    return (mean + std * noise).to(ref.dtype)


def _reference(ctx: Context, unit: Unit) -> list[int]:
    """The tokens a replacement is drawn from: the unit's image, or the prompt's text."""
    return ctx.tm.visuals[unit.image].positions if unit.kind == "vision" else ctx.tm.text_positions()


def variant_inputs(ctx: Context, units: list[Unit], unit_ids: list[int], pert: Perturbation, start: int,
                   end: int) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Input embeddings [V, end-start, D] of each variant, and its deepstack rows (Qwen3-VL), all
    variants' rows one after the other."""
    v = len(units)
    embeds = ctx.embeds[:, start:end].expand(v, -1, -1)
    vis = (torch.nonzero(ctx.visual[start:end])[:, 0] + start).tolist()
    slot = {p: i for i, p in enumerate(vis)}  # position -> row among this run's image positions
    deep = None
    if ctx.deepstack is not None:
        rows = ctx.visual_rows(vis)
        deep = [level[rows][None].expand(v, -1, -1) for level in ctx.deepstack]
    if pert.method in ("occlude", *EMBEDDING_METHODS):
        embeds = embeds.clone()
        deep = [d.clone() for d in deep] if deep is not None else None
    if pert.method in EMBEDDING_METHODS:
        for b, (u, uid) in enumerate(zip(units, unit_ids)):
            seed = pert.seed * 1_000_003 + uid
            ref = _reference(ctx, u)
            embeds[b, [p - start for p in u.positions]] = _replacement(ctx.embeds[0, ref], len(u.positions),
                                                                       pert.method, seed)
            if deep is not None and u.kind == "vision":
                at, ref_rows = [slot[p] for p in u.positions], ctx.visual_rows(ref)
                for d, level in zip(deep, ctx.deepstack):
                    d[b, at] = _replacement(level[ref_rows], len(at), pert.method, seed)
    elif pert.method == "occlude":
        image = units[0].image
        positions = ctx.tm.visuals[image].positions
        features, deepstack = vision_features(ctx.scope, *occluded_pixels(ctx, image, units, pert.occlusion))
        at = [slot[p] for p in positions]
        for b in range(v):
            embeds[b, [p - start for p in positions]] = features[b].to(embeds.dtype)
            for d, level in zip(deep or [], deepstack or []):
                d[b, at] = level[b].to(d.device, d.dtype)
    if deep is not None:
        deep = [d.reshape(-1, d.shape[-1]) for d in deep]
    return embeds, deep


def occluded_pixels(ctx: Context, image: int, units: list[Unit], fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel patches of `image`, one copy per unit with the unit's patches grey or blurred."""
    if any(u.image != image for u in units):
        raise ValueError("an occlusion chunk holds units of one image")
    grid = ctx.image_grid_thw
    offset = int(grid[:image].prod(-1).sum()) if image else 0
    t, h, w = (int(x) for x in grid[image])
    px = ctx.pixel_values[offset:offset + t * h * w]
    filler = _grey(ctx, px) if fill == "grey" else _blurred(ctx, px, h, w)
    m2 = ctx.scope.adapter.merge_size ** 2
    out = px[None].repeat(len(units), 1, 1)
    for b, u in enumerate(units):
        rows = (torch.tensor(u.cells)[:, None] * m2 + torch.arange(m2)[None]).reshape(-1).to(px.device)
        out[b, rows] = filler[rows]
    return out.reshape(-1, px.shape[-1]), grid[image:image + 1].repeat(len(units), 1)


def _grey(ctx: Context, px: torch.Tensor) -> torch.Tensor:
    """Every patch mid-grey (pixel value 127.5), normalised as the processor normalises."""
    proc = ctx.scope.processor.image_processor
    mean, std = torch.tensor(proc.image_mean), torch.tensor(proc.image_std)
    per_channel = (0.5 - mean) / std
    return per_channel.repeat_interleave(px.shape[-1] // len(mean)).to(px)[None].expand(px.shape[0], -1)


def _blurred(ctx: Context, px: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The patches of a Gaussian-blurred copy of the image (sigma: half a vision token)."""
    from torchvision.transforms.functional import gaussian_blur

    ad = ctx.scope.adapter
    p, m, tp = ad.patch_size, ad.merge_size, ad.temporal_patch_size
    c = px.shape[-1] // (tp * p * p)
    # processor layout: rows (h/m, w/m, m, m), columns (C, tp, p, p)
    x = px.reshape(h // m, w // m, m, m, c, tp, p, p)[:, :, :, :, :, 0]
    img = x.permute(4, 0, 2, 5, 1, 3, 6).reshape(c, h * p, w * p)
    sigma = p * m / 2
    k = min(2 * int(3 * sigma) + 1, 2 * ((min(h, w) * p - 1) // 2) + 1)
    blurred = gaussian_blur(img.float(), [k, k], [sigma, sigma]).to(px.dtype)
    x = blurred.reshape(c, h // m, m, p, w // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
    return x[:, :, :, :, :, None].expand(-1, -1, -1, -1, -1, tp, -1, -1).reshape(px.shape)


def _editor(ctx: Context, units: list[Unit], pert: Perturbation, length: int):
    if pert.method != "knockout":
        return nullcontext()
    members = torch.zeros(len(units), length, dtype=torch.bool, device=ctx.ids.device)
    for b, u in enumerate(units):
        members[b, list(u.positions)] = True
    eager = ctx.scope.adapter.attn_base == "eager"
    return MaskEditing(Knockout(members, edge_targets(ctx, pert.edges, length), pert.layers, eager))


@torch.inference_mode()
def score_chunk(ctx: Context, units: list[Unit], unit_ids: list[int], pert: Perturbation):
    """(delta log-prob [V, n], KL [V, n], greedy token [V, n]) of the answer under each variant."""
    start = first_changed(ctx, units, pert.method)
    embeds, deep = variant_inputs(ctx, units, unit_ids, pert, start, ctx.length)
    with _editor(ctx, units, pert, ctx.length):
        hidden = run_decoder(ctx, embeds, start, new_cache(ctx.scope, ctx, start, len(units)), deep)
    logp = log_probs(ctx.scope, hidden[:, [r - start for r in ctx.rows]])
    clean = ctx.clean_logp[None]
    answer = ctx.answer[None, :, None]
    delta = (logp.gather(-1, answer.expand(len(units), -1, 1)) - clean.gather(-1, answer))[..., 0]
    kl = (clean.exp() * (clean - logp)).sum(-1).clamp_min(0)
    return delta, kl, logp.argmax(-1)


@torch.inference_mode()
def regenerate_chunk(ctx: Context, units: list[Unit], unit_ids: list[int], pert: Perturbation,
                     max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    """Greedy answers of each variant, batched; stops once every variant has emitted a stop token."""
    start, end = first_changed(ctx, units, pert.method), ctx.tm.query + 1
    embeds, deep = variant_inputs(ctx, units, unit_ids, pert, start, end)
    v = len(units)
    cache = new_cache(ctx.scope, ctx, start, v)
    out: list[list[int]] = [[] for _ in range(v)]
    with _editor(ctx, units, pert, end + max_new_tokens):
        hidden = run_decoder(ctx, embeds, start, cache, deep)
        for step in range(max_new_tokens):
            token = ctx.scope.adapter.lm_head(hidden[:, -1]).argmax(-1)
            for b, t in enumerate(token.tolist()):
                if not out[b] or out[b][-1] not in stop_ids:
                    out[b].append(t)
            if step == max_new_tokens - 1 or all(o[-1] in stop_ids for o in out):
                break
            # a generated token continues the text positions after the query on all three mRoPE axes
            pos = (ctx.positions[:, :, end - 1] + step + 1).view(3, 1, 1).expand(3, v, 1)
            e = ctx.scope.adapter.language_model.embed_tokens(token)[:, None]
            hidden = run_decoder(ctx, e, end + step, cache, None, positions=pos)
    return out
