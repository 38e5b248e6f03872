"""Settings of one masking analysis, checked against the model before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import VlmscopeError
from ...limits import ANSWER_TOKENS
from ...specs import check_layer_syntax, parse_layers
from .perturbations import EDGES, OCCLUSIONS, PERTURBATIONS, Perturbation
from .units import parse_mode, parse_window

if TYPE_CHECKING:
    from ...scope import Scope


@dataclass
class MaskingOptions:
    """Settings of one analysis. ``layers`` and ``edges`` restrict knockout to some decoder layers
    and to some receiving positions (``all``, ``vision``, ``question``, ``last``)."""

    mode: str = "vision"  # text | vision | both
    perturbation: str = "knockout"  # knockout | zero | mean | noise | occlude
    window: int | str = 1  # k x k vision tokens, or "image"
    stride: int | None = None  # None: tiled windows; 1: sliding
    text_unit: str = "token"  # token | word
    image_index: int | None = None  # mask only this image's tokens
    layers: str | int | list[int] | None = "all"
    edges: str | tuple[str, ...] = "all"
    occlusion: str = "grey"  # grey | blur
    max_new_tokens: int = ANSWER_TOKENS
    regenerate: bool = False
    batch_size: int = 32
    seed: int = 0


def check_options(scope: Scope, opts: MaskingOptions) -> Perturbation:
    """Check the options against the model; errors name the bad value and what is accepted."""
    edges = check_static(opts)
    n = scope.adapter.num_layers
    layers = parse_layers(opts.layers, n, "layer")
    if opts.perturbation != "knockout" and (len(layers) != n or edges != ("all",)):
        raise VlmscopeError(
            f"layers and edges restrict attention knockout; perturbation {opts.perturbation!r} takes neither"
        )
    if opts.perturbation == "knockout" and "flash" in scope.attn_base:
        raise VlmscopeError(
            "knockout edits the attention mask, which flash attention does not take; "
            "load the model with attn_implementation='sdpa'"
        )
    return Perturbation(
        opts.perturbation, None if len(layers) == n else frozenset(layers), edges, opts.occlusion, opts.seed
    )


def check_static(opts: MaskingOptions) -> tuple[str, ...]:
    """What can be checked without the model (before it loads); returns the edge sets."""
    parse_mode(opts.mode)
    parse_window(opts.window)
    if opts.perturbation not in PERTURBATIONS:
        raise VlmscopeError(f"unknown perturbation {opts.perturbation!r}; choose from {', '.join(PERTURBATIONS)}")
    if opts.perturbation == "occlude" and opts.mode != "vision":
        raise VlmscopeError(f"perturbation 'occlude' masks image pixels and needs mode 'vision', not {opts.mode!r}")
    if opts.occlusion not in OCCLUSIONS:
        raise VlmscopeError(f"unknown occlusion {opts.occlusion!r}; choose from {', '.join(OCCLUSIONS)}")
    edges = opts.edges.split(",") if isinstance(opts.edges, str) else opts.edges
    edges = tuple(str(e).strip() for e in edges) if isinstance(edges, (list, tuple)) else (repr(edges),)
    bad = [e for e in edges if e not in EDGES]
    if bad or not edges:
        raise VlmscopeError(f"unknown edge set {','.join(bad) or repr(opts.edges)}; choose from {', '.join(EDGES)}")
    check_layer_syntax(opts.layers, "layer")
    if opts.image_index is not None and not isinstance(opts.image_index, int):
        raise VlmscopeError(f"image_index must be a whole number, got {opts.image_index!r}")
    for name in ("max_new_tokens", "batch_size", "seed"):
        value = getattr(opts, name)
        if not isinstance(value, int) or value < (0 if name == "seed" else 1):
            raise VlmscopeError(f"{name} must be a whole number{'' if name == 'seed' else ' >= 1'}, got {value!r}")
    return edges
