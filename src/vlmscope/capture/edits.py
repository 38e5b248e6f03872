"""Public activation edits: replace the tensor at a site with a function of it.

    scope.forward(ex, "llm.layers.3", edits={"llm.layers.1": lambda x: x + steer})
    scope.forward(ex, edits={"llm.layers.1": Edit(lambda x: donor, tokens="vision")})

An edit is keyed by a concrete site name, the same names as captures. ``fn(x)`` receives the
tensor at that site for one example, exactly as a capture with the same token selection would
return it before any reduction (sequence sites: [n, D] rows of the selected positions of the
current step; vision sites: [N, C] of each selected image in raster order), and returns a
tensor of the same shape that replaces it in the run. Edits run before captures at the same
site, so a capture sees the edited value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import VlmscopeError
from ..sites import Site
from ..specs import Selection, parse_selection


@dataclass(frozen=True)
class Edit:
    """``fn`` applied at the positions of ``tokens`` (a token selection: all, vision, image:K,
    text, query, generated, vision_last)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    tokens: str = "all"


@dataclass(frozen=True)
class EditRequest:
    site: Site
    selection: Selection
    fn: Callable[[torch.Tensor], torch.Tensor]


def resolve_edits(adapter, edits: Mapping[str, Callable | Edit] | None) -> list[EditRequest]:
    """Check every edit against the model: a concrete, editable site and a callable."""
    if edits is not None and not isinstance(edits, Mapping):
        raise VlmscopeError(f"edits takes a mapping of site name -> function or Edit, got {type(edits).__name__}")
    out = []
    for name, edit in (edits or {}).items():
        edit = edit if isinstance(edit, Edit) else Edit(edit)
        if not callable(edit.fn):
            raise VlmscopeError(f"edit at {name!r} is not a function of the tensor: got {type(edit.fn).__name__}")
        site = adapter.site(name)
        spec = adapter.site_spec(site.group)
        if not spec.editable:
            editable = [s.group for s in adapter.sites if s.editable]
            raise VlmscopeError(f"site {name!r} cannot be edited; editable sites: {', '.join(editable)}")
        selection = parse_selection(edit.tokens)
        if site.is_vision and selection.kind not in ("all", "vision", "image"):
            raise VlmscopeError(f"edit at vision site {name!r} takes tokens all, vision or image:K, not {selection}")
        out.append(EditRequest(site, selection, edit.fn))
    return out


def apply(fn, x: torch.Tensor, where: str) -> torch.Tensor:
    """fn(x), checked: same shape, a tensor; cast back to x's dtype and device."""
    y = fn(x)
    if not torch.is_tensor(y) or tuple(y.shape) != tuple(x.shape):
        got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise VlmscopeError(f"edit at {where} must return a tensor of shape {tuple(x.shape)}, got {got}")
    return y.to(x.device, x.dtype)
