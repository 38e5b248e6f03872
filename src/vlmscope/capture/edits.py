"""Public activation edits: replace the tensor at a site with a function of it.

    scope.forward(ex, "llm.layers.3", edits={"llm.layers.1": lambda x: x + steer})
    scope.forward(ex, edits={"llm.layers.1": Edit(lambda x: donor, tokens="vision")})

An edit is keyed by a concrete site name, the same names as captures. ``fn(x)`` receives the
tensor at that site for one example, exactly as a capture with the same token selection would
return it before any reduction (sequence sites: [n, D] rows of the selected positions of the
current step; vision sites: [N, C] of each selected image in raster order), and returns a
tensor of the same shape that replaces it in the run. Edits run before captures at the same
site, so a capture sees the edited value.

Here too is how a run applies them (`Editor`): hook bodies on the same modules as captures that
replace the tensor instead of keeping it, choosing rows as a capture with the same selection would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch

from ..errors import VlmscopeError
from ..sites import Site, SiteSpec
from ..specs import Selection, parse_selection
from .selection import Selector


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


class Editor:
    """The hook bodies of one run's edits."""

    def __init__(self, adapter, selector: Selector):
        self.adapter, self.selector = adapter, selector

    def editor(self, edit: EditRequest, spec: SiteSpec) -> Callable[[torch.Tensor], torch.Tensor]:
        """The hook body returning the tensor at `edit`'s site with the edit applied."""
        if spec.layout == "sequence":
            return partial(self.edit_sequence, edit)
        return partial(self.edit_vision, edit, spec)

    def edit_sequence(self, edit: EditRequest, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        start = self.selector.step_start + self.selector.step_len - length
        out = None
        for b in range(x.shape[0]):
            rel = self.selector.rows(edit.selection, b, start, length)
            if rel.numel():
                out = x.clone() if out is None else out
                out[b, rel] = apply(edit.fn, x[b, rel], f"{edit.site} (example {b})")
        return x if out is None else out

    def edit_vision(self, edit: EditRequest, spec: SiteSpec, x: torch.Tensor) -> torch.Tensor:
        items, parts, grid = self.selector.vision_parts(x, spec)
        for i, item in enumerate(items):
            if edit.selection.kind == "image" and edit.selection.index != item["visual"]:
                continue
            parts[i] = apply(edit.fn, parts[i], f"{edit.site} (example {item['b']}, visual {item['visual']})")
        return self.adapter.from_raster(torch.cat(parts), grid, spec)
