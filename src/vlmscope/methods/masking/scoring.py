"""The batched runs that score a chunk of units.

A chunk of units becomes a batch of variants of one example. Every variant starts at the chunk's
first changed position on a shared slice of the clean KV cache, and one teacher-forced pass
scores the whole answer: the log-probability of each answer token and the KL divergence of each
next-token distribution from the clean one.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ...capture.attention import intervening
from ...capture.knockout import Knockout
from ...errors import VlmscopeError
from .perturbations import EDGES, Perturbation, first_changed, knocked_from, variant_inputs
from .prefix import CleanRun, log_probs, new_cache, run_decoder
from .units import Unit


def plan_chunks(units: list[Unit], indices, batch_size: int) -> list[list[int]]:
    """Batches of unit indices: one image per batch, in sequence order, so each batch's shared
    prefix reaches as far as its first masked position."""
    order = sorted(indices, key=lambda i: (units[i].image is not None, units[i].image or 0, units[i].first))
    chunks: list[list[int]] = []
    for i in order:
        if chunks and len(chunks[-1]) < batch_size and units[chunks[-1][0]].image == units[i].image:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def edge_targets(ctx: CleanRun, edges: tuple[str, ...], length: int) -> torch.Tensor:
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
            out[tm.query :] = True
        else:
            raise VlmscopeError(f"unknown edge set {e!r}; choose from {', '.join(EDGES)}")
    return out


def _targets(ctx: CleanRun, pert: Perturbation) -> torch.Tensor | None:
    return edge_targets(ctx, pert.edges, ctx.length).cpu() if pert.kind == "knockout" else None


def unchanged_units(ctx: CleanRun, units: list[Unit], pert: Perturbation) -> set[int]:
    """Units whose masking cannot change any scored row (knockout of a unit after every position
    that would lose its edges to it): their impact is zero without a run."""
    targets = _targets(ctx, pert)
    if targets is None:
        return set()
    last_row = max(ctx.rows)
    out = set()
    for i, u in enumerate(units):
        row = knocked_from(u, targets)
        if row is None or row > last_row:
            out.add(i)
    return out


def _editor(ctx: CleanRun, units: list[Unit], pert: Perturbation, length: int):
    if pert.kind != "knockout":
        return nullcontext()
    members = torch.zeros(len(units), length, dtype=torch.bool, device=ctx.ids.device)
    for b, u in enumerate(units):
        members[b, list(u.positions)] = True
    eager = ctx.scope.attn_base == "eager"
    return intervening(Knockout(members, edge_targets(ctx, pert.edges, length), pert.layers, eager))


@torch.inference_mode()
def score_chunk(ctx: CleanRun, units: list[Unit], unit_ids: list[int], pert: Perturbation):
    """(delta log-prob [V, n], KL [V, n], greedy token [V, n]) of the answer under each variant."""
    start = first_changed(ctx, units, pert.kind, _targets(ctx, pert))
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
def regenerate_chunk(
    ctx: CleanRun, units: list[Unit], unit_ids: list[int], pert: Perturbation, max_new_tokens: int, stop_ids: set[int]
) -> list[list[int]]:
    """Greedy answers of each variant, batched; stops once every variant has emitted a stop token."""
    start, end = first_changed(ctx, units, pert.kind, _targets(ctx, pert)), ctx.tm.query + 1
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
