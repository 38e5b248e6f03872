"""What a perturbation does to a chunk of units: the input embeddings (and Qwen3-VL deepstack
rows) of each variant, for replacement and occlusion. Attention knockout changes no input: it
is an attention-mask edit (`capture.knockout`), applied by `scoring`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .prefix import CleanRun, vision_features
from .units import Unit

PERTURBATIONS = ("knockout", "zero", "mean", "noise", "occlude")
EMBEDDING = ("zero", "mean", "noise")
EDGES = ("all", "vision", "question", "last")
OCCLUSIONS = ("grey", "blur")


@dataclass(frozen=True)
class Perturbation:
    """How a unit is masked: ``kind`` is one of PERTURBATIONS. ``layers`` and ``edges`` apply to
    knockout only (None: every layer)."""

    kind: str = "knockout"
    layers: frozenset[int] | None = None
    edges: tuple[str, ...] = ("all",)
    occlusion: str = "grey"
    seed: int = 0


def first_changed(ctx: CleanRun, units: list[Unit], kind: str, targets: torch.Tensor | None = None) -> int:
    """The first position whose state differs from the clean run in any variant of the chunk.
    Knockout with `targets` (the positions that lose their edges): the first target after a unit."""
    if kind == "occlude":  # the vision tower mixes the whole image: every token of it changes
        return min(ctx.tm.visuals[u.image_index].positions[0] for u in units)
    if kind == "knockout" and targets is not None:
        firsts = [knocked_from(u, targets) for u in units]
        return min(f for f in firsts if f is not None)
    return min(u.first for u in units)


def knocked_from(unit: Unit, targets: torch.Tensor) -> int | None:
    """Under knockout, the first row that changes: a target position after the unit's first
    position that is not in the unit (a member keeps its edges to the unit; earlier rows cannot
    see it). None: no row changes, the variant is the clean run."""
    hit = targets.clone()
    hit[: unit.first + 1] = False
    hit[list(unit.positions)] = False
    rows = torch.nonzero(hit)
    return int(rows[0, 0]) if len(rows) else None


def _replacement(ref: torch.Tensor, n: int, kind: str, seed: int) -> torch.Tensor:
    """[n, D] values for `kind` from reference rows `ref`: zeros, their mean, or Gaussian noise with
    their per-channel mean and spread (a fixed seed per unit)."""
    if kind == "zero":
        return torch.zeros(n, ref.shape[-1], dtype=ref.dtype, device=ref.device)
    mean = ref.float().mean(0)
    if kind == "mean":
        return mean.to(ref.dtype).expand(n, -1)
    std = ref.float().std(0) if ref.shape[0] > 1 else torch.zeros_like(mean)
    noise = torch.randn(n, ref.shape[-1], generator=torch.Generator().manual_seed(seed)).to(ref.device)
    return (mean + std * noise).to(ref.dtype)


def _reference(ctx: CleanRun, unit: Unit) -> list[int]:
    """The tokens a replacement is drawn from: the unit's image, or the prompt's text."""
    return ctx.tm.visuals[unit.image_index].positions if unit.kind == "vision" else ctx.tm.text_positions()


def variant_inputs(
    ctx: CleanRun, units: list[Unit], unit_ids: list[int], pert: Perturbation, start: int, end: int
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
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
    if pert.kind in ("occlude", *EMBEDDING):
        embeds = embeds.clone()
        deep = [d.clone() for d in deep] if deep is not None else None
    if pert.kind in EMBEDDING:
        for b, (u, uid) in enumerate(zip(units, unit_ids)):
            seed = pert.seed * 1_000_003 + uid
            ref = _reference(ctx, u)
            embeds[b, [p - start for p in u.positions]] = _replacement(
                ctx.embeds[0, ref], len(u.positions), pert.kind, seed
            )
            if deep is not None and u.kind == "vision":
                at, ref_rows = [slot[p] for p in u.positions], ctx.visual_rows(ref)
                for d, level in zip(deep, ctx.deepstack or []):  # deep is not None: neither is ctx.deepstack
                    d[b, at] = _replacement(level[ref_rows], len(at), pert.kind, seed)
    elif pert.kind == "occlude":
        image = units[0].image_index
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


def occluded_pixels(ctx: CleanRun, image: int, units: list[Unit], fill: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel patches of `image`, one copy per unit with the unit's patches grey or blurred."""
    if any(u.image != image for u in units):
        raise ValueError("an occlusion chunk holds units of one image")
    grid = ctx.image_grid_thw
    assert grid is not None and ctx.pixel_values is not None, "occlusion needs an image"
    offset = int(grid[:image].prod(-1).sum()) if image else 0
    t, h, w = (int(x) for x in grid[image])
    px = ctx.pixel_values[offset : offset + t * h * w]
    filler = _grey(ctx, px) if fill == "grey" else _blurred(ctx, px, h, w)
    m2 = ctx.scope.adapter.merge_size**2
    out = px[None].repeat(len(units), 1, 1)
    for b, u in enumerate(units):
        rows = (torch.tensor(u.cells)[:, None] * m2 + torch.arange(m2)[None]).reshape(-1).to(px.device)
        out[b, rows] = filler[rows]
    return out.reshape(-1, px.shape[-1]), grid[image : image + 1].repeat(len(units), 1)


def _grey(ctx: CleanRun, px: torch.Tensor) -> torch.Tensor:
    """Every patch mid-grey (pixel value 127.5), normalised as the processor normalises."""
    proc = ctx.scope.processor.image_processor
    mean, std = torch.tensor(proc.image_mean), torch.tensor(proc.image_std)
    per_channel = (0.5 - mean) / std
    return per_channel.repeat_interleave(px.shape[-1] // len(mean)).to(px)[None].expand(px.shape[0], -1)


def _blurred(ctx: CleanRun, px: torch.Tensor, h: int, w: int) -> torch.Tensor:
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
