"""Trace: everything one forward or one generate captured, split per example."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..display import block, table
from ..errors import VlmscopeError
from ..tokenmap import TokenMap


@dataclass
class Trace:
    """``captures[key][b]`` is example b's tensor for `key` (on the CPU): the site name, or
    ``name/site`` for a plan line given a ``name``.

    LLM sites: [n, D] rows at ``positions[site][b]`` (unpadded positions), or [D] when reduced.
    Attention sites: [H, n, T] rows over all keys of the example (T = its final length), or over
    the kept key columns (sorted positions) when the plan asked for ``columns="vision"``.
    Vision sites: [N, C] in raster order over the selected images, or [C] when reduced.
    """

    token_maps: list[TokenMap]
    captures: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    positions: dict[str, list[list[int]]] = field(default_factory=dict)
    generated_ids: list[list[int]] | None = None
    generated_text: list[str] | None = None
    stopped_early: bool = False

    def __getitem__(self, site: str) -> list[torch.Tensor]:
        try:
            return self.captures[site]
        except KeyError:
            raise VlmscopeError(f"site {site!r} was not captured; captured: {', '.join(self.captures)}") from None

    def __contains__(self, site: str) -> bool:
        return site in self.captures

    def __iter__(self) -> Iterator[str]:
        """The captured site names, like a mapping: ``for site in trace``, ``list(trace)``."""
        return iter(self.captures)

    def __len__(self) -> int:
        return len(self.captures)

    def __bool__(self) -> bool:
        return True  # a trace without captures still holds its token maps and generated text

    def keys(self):
        return self.captures.keys()

    def items(self):
        return self.captures.items()

    def get(self, site: str, example: int = 0) -> torch.Tensor:
        return self[site][example]

    @property
    def sites(self) -> list[str]:
        return list(self.captures)

    def stack(self, site: str) -> torch.Tensor:
        """Stack a site over examples (works for reduced captures and equal-length rows)."""
        return torch.stack(self[site])

    def __repr__(self) -> str:
        sites = ", ".join(f"{k} {list(v[0].shape)}" for k, v in list(self.captures.items())[:4] if v)
        more = f", ... ({len(self.captures)} sites)" if len(self.captures) > 4 else ""
        text = f"; generated {self.generated_text!r}" if self.generated_text is not None else ""
        n = len(self.token_maps)
        return f"Trace({n} example{'s' * (n != 1)}; {sites or 'no captures'}{more}{text})"

    def _repr_html_(self) -> str:
        rows = [
            [site, ", ".join(str(list(t.shape)) for t in per_example)] for site, per_example in self.captures.items()
        ]
        parts = [table(["site", "shape per example"], rows) if rows else "<p>no captures</p>"]
        if self.generated_text is not None:
            parts.append(table(["example", "generated"], list(enumerate(self.generated_text))))
        parts += [tm._repr_html_() for tm in self.token_maps[:2]]
        return block(f"Trace: {len(self.token_maps)} examples, {len(self.captures)} sites", *parts)

    def summary(self) -> dict:
        return {
            "examples": len(self.token_maps),
            "sites": {k: [list(t.shape) for t in v] for k, v in self.captures.items()},
            "generated_text": self.generated_text,
            "stopped_early": self.stopped_early,
        }
