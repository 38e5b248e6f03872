"""CapturePlan: which sites, at which layers, which tokens, reduced how."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import VlmscopeError
from ..sites import Site
from ..specs import Selection, parse_layers, parse_reduction, parse_selection

COLUMNS = ("all", "vision", "vision+text")
# what each reduction but "none" does to a request's rows (dimension 0), on the device
REDUCERS = {
    "mean": lambda x: x.mean(0),
    "max": lambda x: x.max(0).values,
    "last": lambda x: x[-1],
}


@dataclass
class CaptureSpec:
    """One line of a plan. ``layers`` expands sites written without an index (``llm.layers``,
    ``vision.blocks.{i}``); sites with an explicit index ignore it. ``tokens`` selects LLM
    sequence positions; vision-tower sites keep every patch of every image unless ``image:K``.
    ``name`` prefixes the keys of its captures (``vt/llm.layers.7``), so one site can be taken
    twice in one run with different tokens or reductions."""

    sites: Sequence[str]
    layers: str | int | list[int] | tuple[int, ...] | None = "all"
    tokens: str = "all"
    reduce: str = "none"
    columns: str = "all"  # attention sites: key columns kept, all | vision | vision+text
    name: str | None = None


@dataclass(frozen=True)
class Request:
    """One resolved capture: a concrete site, a token selection and a reduction."""

    site: Site
    selection: Selection
    reduce: str
    columns: str = "all"
    name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}/{self.site.name}" if self.name else self.site.name


@dataclass
class CapturePlan:
    specs: list[CaptureSpec] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        sites: str | Sequence[str],
        layers="all",
        tokens: str = "all",
        reduce: str = "none",
        columns: str = "all",
        name: str | None = None,
    ) -> CapturePlan:
        return cls().add(sites, layers, tokens, reduce, columns, name)

    def add(
        self,
        sites,
        layers="all",
        tokens: str = "all",
        reduce: str = "none",
        columns: str = "all",
        name: str | None = None,
    ) -> CapturePlan:
        sites = [s.strip() for s in sites.split(",")] if isinstance(sites, str) else list(sites)
        if columns not in COLUMNS:
            raise VlmscopeError(f"unknown attention columns {columns!r}; choose from {', '.join(COLUMNS)}")
        if name is not None and (not name or "/" in name):
            raise VlmscopeError(f"bad capture name {name!r}: use a non-empty name without '/'")
        self.specs.append(CaptureSpec(sites, layers, tokens, reduce, columns, name))
        return self

    def resolve(self, adapter) -> list[Request]:
        """Expand every spec against the model; errors name the bad site, layer or selection."""
        out: dict[str, Request] = {}
        for spec in self.specs:
            selection, reduce = parse_selection(spec.tokens), parse_reduction(spec.reduce)
            for name in spec.sites:
                group, idx = adapter.parse_site(name)
                if "{" not in group:
                    indices: list[int | None] = [None]
                else:
                    n = adapter.group_size(group)
                    what = {"vision.blocks.{i}": "vision block", "vision.deepstack.{k}": "deepstack level"}.get(
                        group, "layer"
                    )
                    indices = list(parse_layers(int(idx) if idx is not None else spec.layers, n, what))
                for i in indices:
                    site = Site(group, i)
                    # vision-tower sites keep every patch of the selected images: only image:K narrows them
                    sel = selection if not site.is_vision or selection.kind == "image" else Selection("all")
                    req = Request(site, sel, reduce, spec.columns if site.is_attention else "all", spec.name)
                    if req.key in out and out[req.key] != req:
                        raise VlmscopeError(f"site {req.key} requested twice with different tokens/reduction")
                    out[req.key] = req
        if not out:
            raise VlmscopeError("the capture plan is empty: name at least one site")
        return list(out.values())
