"""The captures of sequence and vision sites, kept on the device while the run goes on.

A sequence site's hook keeps, with one gather, the rows its selection takes among the positions of
the current step, as a chunk (rows, example of each row, unpadded position of each row); the
chunks are joined per example at the end (`assembly`). A vision site's hook keeps each selected
visual's part, in raster order, under its example.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from ..sites import SiteSpec
from .plan import Request
from .selection import Selector


class Keepers:
    """Buffers of one run's sequence and vision captures, and the hook bodies that fill them."""

    def __init__(self, adapter, batch, selector: Selector, requests: list[Request]):
        self.adapter, self.selector = adapter, selector
        # vision sites: per-example parts; sequence sites: per-step chunks
        self.buffers: dict[str, list[list[torch.Tensor]]] = {
            r.key: [[] for _ in range(batch.size)] for r in requests if r.site.is_vision
        }
        self.chunks: dict[str, list[tuple]] = {
            r.key: [] for r in requests if not r.site.is_vision and not r.site.is_attention
        }
        # the prefill's final norm, for the logits transformers skips; dropped when a step starts
        self.norm: torch.Tensor | None = None

    def keeper(self, req: Request, spec: SiteSpec) -> Callable[[torch.Tensor], None]:
        """The hook body keeping `req` from the tensor at its site."""
        if spec.layout == "sequence":
            return partial(self.keep_sequence, req)
        return partial(self.keep_vision, req, spec)

    def keep_sequence(self, req: Request, x: torch.Tensor) -> None:
        """x: [B, L, D] for the positions that end where the current step ends."""
        sel = self.selector
        length = x.shape[1]
        end = sel.step_start + sel.step_len
        start = end - length
        if start > sel.step_start and self.norm is not None and req.site.group == "logits":
            # transformers computes the prefill's logits at its last position only: the rows
            # before it come from the final norm through the same head
            step = sel.step_rows(req.selection, sel.step_start, start - sel.step_start)
            if step is not None:
                head = self.adapter.lm_head
                h = self.norm[step.b_dev, step.rel_dev]
                self.chunks[req.key].append((F.linear(h, head.weight, head.bias), step.b, step.pos))
        step = sel.step_rows(req.selection, start, length)
        if step is not None:
            self.chunks[req.key].append((x.detach()[step.b_dev, step.rel_dev], step.b, step.pos))

    def keep_norm(self, x: torch.Tensor) -> None:
        """The final norm's output during the prefill (generate with logits captured)."""
        if self.selector.step_start < self.selector.T0:
            self.norm = x.detach()

    def keep_vision(self, req: Request, spec: SiteSpec, x: torch.Tensor) -> None:
        items, parts, _ = self.selector.vision_parts(x, spec)
        for item, part in zip(items, parts):
            sel = req.selection
            if sel.kind == "image" and sel.index != item["visual"]:
                continue
            self.buffers[req.key][item["b"]].append(part.detach())
