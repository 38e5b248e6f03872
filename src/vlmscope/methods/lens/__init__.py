"""Lenses on vision tokens: what a vision token's residual stream means at each decoder layer.

from vlmscope.methods.lens import lens, layer_stats, build_index
lens(scope, ex, kind="logit")                       # final norm + LM head, top-k tokens
lens(scope, ex, kind="embedding")                   # nearest input-embedding rows by cosine
lens(scope, ex, kind="value")                       # what layer i's attention reads from it, via the LM head
build_index(scope, "captions.txt", "all", "idx/")   # caption tokens' states, FAISS per layer
lens(scope, ex, kind="contextual", index="idx/")    # nearest caption tokens in context
layer_stats(scope, [ex, ...]) / layer_stats("features/")  # norms per layer, vision vs text
"""

from __future__ import annotations

from pathlib import Path

from ...errors import VlmscopeError
from .index import build_index
from .result import Entry, Lens
from .stats import LayerStats

KINDS = ("logit", "embedding", "value", "contextual")

__all__ = ["lens", "layer_stats", "build_index", "Lens", "Entry", "LayerStats", "KINDS"]


def lens(scope, example, kind: str = "logit", layers="all", k: int = 5, index=None) -> Lens:
    """Top-k readouts of every vision token of `example` at each layer of `layers`.

    For ``contextual``, `index` is a directory from `build_index` (or an opened ContextIndex) and
    ``layers="all"`` means every layer the index holds."""
    from .common import first_image, layer_list, vision_states

    if kind not in KINDS:
        raise VlmscopeError(f"unknown lens kind {kind!r}; accepted: {', '.join(KINDS)}")
    if not isinstance(k, int) or k < 1:
        raise VlmscopeError(f"k must be a positive integer, got {k!r}")
    ctx = None
    if kind == "contextual":
        from .contextual import ContextIndex

        if index is None:
            raise VlmscopeError(
                "the contextual lens needs an index: build one with `vlmscope lens index` and pass --index DIR"
            )
        ctx = index if isinstance(index, ContextIndex) else ContextIndex(index)
        layers = ctx.layers if layers in (None, "all") else layer_list(scope, layers)
        ctx.check(scope, layers)
    else:
        layers = layer_list(scope, layers)
    if kind == "value":
        from .value import value_states

        states, tm = value_states(scope, example, layers)
    else:
        states, tm = vision_states(scope, example, layers)
    if kind == "contextual":
        from .contextual import contextual_entries

        assert ctx is not None
        entries = contextual_entries(ctx, states, k)
    else:
        from .embedding import embedding_top
        from .logit import logit_top
        from .value import value_top

        top = {"logit": logit_top, "embedding": embedding_top, "value": value_top}[kind](scope, states, k)
        tok = scope.processor.tokenizer
        entries = {}
        for layer, (scores, ids) in top.items():
            entries[layer] = [
                [Entry(tok.decode([int(i)]), float(s), token_id=int(i)) for s, i in zip(srow, irow)]
                for srow, irow in zip(scores.tolist(), ids.tolist())
            ]
    return Lens(
        kind,
        list(layers),
        entries,
        prompt=example.prompt,
        model=str(scope.source),
        grids=[tuple(v.merged_thw) for v in tm.visuals],
        boxes=[v.token_boxes().tolist() for v in tm.visuals],
        image=first_image(example),
        index=str(ctx.path) if ctx else None,
    )


def layer_stats(scope_or_store, examples=None, layers="all") -> LayerStats:
    """Norm statistics per layer: ``layer_stats(scope, examples)`` runs the model on one Example or
    a list; ``layer_stats(path)`` reads a ``layers``-preset extraction store (vision tokens only)."""
    from .stats import stats_from_examples, stats_from_store

    if isinstance(scope_or_store, (str, Path)):
        return stats_from_store(scope_or_store, layers)
    if examples is None:
        raise VlmscopeError("layer_stats(scope, examples): give an Example or a list of them")
    return stats_from_examples(scope_or_store, examples, layers)
