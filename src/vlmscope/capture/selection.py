"""Which rows of each tensor a capture or an edit takes.

Every step of the language model (the prefill, then each decode step) covers a range of padded
positions, [step_start, step_start + step_len). Each token selection is resolved once per batch
into (example, padded position) pairs; a step's rows for a selection are computed once and shared
by every hook of that step (every layer of it). A decode step's rows are every example's one row,
or none. Attention rows also keep key columns (`columns`), and vision sites split each vision
tower call's output into its visuals (`vision_parts`), in raster order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..errors import VlmscopeError
from ..sites import SiteSpec
from ..specs import Selection


@dataclass
class Rows:
    """One selection resolved over the batch: the kept prompt rows as (example, padded position)
    pairs sorted by example then position, and whether decode steps are kept too."""

    b: torch.Tensor  # [n] long, CPU
    p: torch.Tensor  # [n] long, CPU
    decode: bool


@dataclass
class Step:
    """The rows a selection keeps in one step: indices on the CPU (bookkeeping) and on the device (gather)."""

    b: torch.Tensor
    p: torch.Tensor  # padded positions
    b_dev: torch.Tensor
    rel_dev: torch.Tensor  # row within the step's tensor
    pos: torch.Tensor  # unpadded positions
    union: torch.Tensor | None = None  # attention: the query rows computed (device)
    pick: torch.Tensor | None = None  # attention: each kept row's index in `union`
    last: bool = False  # attention: `union` is just the step's last row
    every: bool = False  # attention: each example keeps that one row, in example order
    stacked: bool = False  # attention: several decode steps' rows, already [rows, H, K] in row order


class Selector:
    """Positions of the current step, and the rows each selection keeps among them. The step hook
    (`hooks.Wiring.on_step`) moves `step_start` and `step_len` before each step."""

    def __init__(self, adapter, batch, selections: Iterable[Selection], *, generating: bool):
        self.adapter, self.batch, self.generating = adapter, batch, generating
        self.T0 = batch.length
        self.step_start = self.step_len = 0
        self.device = batch.inputs["input_ids"].device
        self.wanted = {sel: self._wanted(sel) for sel in dict.fromkeys(selections)}
        self.flat = {sel: self._flat(sel) for sel in self.wanted}
        self._steps: dict[tuple, Step | None] = {}
        self._last_step: tuple | None = None
        self._decode: dict[int, tuple] = {}
        self._unions: dict[int, tuple] = {}
        self._stacked: dict[tuple, Step] = {}
        self._pads = torch.tensor(batch.pad, dtype=torch.long)
        self.vision_calls: list[dict] = []

    # ---- per request --------------------------------------------------------------------------
    def _wanted(self, sel: Selection) -> list[tuple[torch.Tensor, bool]]:
        """Per example: padded prompt positions to keep, and whether decode steps are kept too."""
        out = []
        for b, tm in enumerate(self.batch.token_maps):
            decode = self.generating and sel.kind in ("all", "generated")
            if sel.kind == "all":
                pos = list(range(tm.length))
            elif sel.kind in ("vision", "image", "vision_last"):
                pos = tm.vision_positions(sel.index)
                if not pos:
                    raise VlmscopeError(f"token selection {sel} needs an image, but example {b} has none")
                pos = pos[-1:] if sel.kind == "vision_last" else pos
            elif sel.kind == "text":
                pos = tm.text_positions()
            elif sel.kind == "query":
                pos = [tm.query]
            else:  # generated: the positions whose outputs predict the answer tokens
                n = 0 if self.generating or tm.answer is None else tm.answer[1] - tm.answer[0]
                pos = tm.predicting_positions(max(n, 1))
            pad = self.batch.pad[b]
            out.append((torch.tensor([p + pad for p in pos], dtype=torch.long, device=self.device), decode))
        return out

    def _flat(self, sel: Selection) -> Rows:
        per = self.wanted[sel]
        b = torch.cat([torch.full((len(pos),), i, dtype=torch.long) for i, (pos, _) in enumerate(per)])
        p = torch.cat([pos.cpu() for pos, _ in per])
        return Rows(b, p, any(decode for _, decode in per))

    def columns(self, which: str) -> list[torch.Tensor | slice] | None:
        """Padded key positions kept per example for attention rows (None: every key); a slice
        where they are one run (one image's tokens), which selects without a gather."""
        if which == "all":
            return None
        out: list[torch.Tensor | slice] = []
        for b, tm in enumerate(self.batch.token_maps):
            pos = sorted(tm.vision_positions() + (tm.text_positions() if which == "vision+text" else []))
            pad = self.batch.pad[b]
            if pos and pos[-1] - pos[0] == len(pos) - 1:
                out.append(slice(pos[0] + pad, pos[-1] + pad + 1))
            else:
                out.append(torch.tensor(pos, dtype=torch.long) + pad)
        return out

    # ---- per step -----------------------------------------------------------------------------
    def step_rows(self, sel: Selection, start: int, length: int) -> Step | None:
        """The rows `sel` keeps among padded positions [start, start+length) of every example
        (None: none). Computed once per step and shared by every hook of that step."""
        last = self._last_step
        if last is not None and last[0] is sel and last[1] == start and last[2] == length:
            return last[3]  # the other layers of the same step
        key = (sel, start, length)
        if key not in self._steps:
            w = self.flat[sel]
            if start >= self.T0:  # a decode step: every example keeps all its rows, or none
                self._steps[key] = self._decode_rows(start, length) if w.decode else None
            else:
                hit = (w.p >= start) & (w.p < start + length)
                b, rel = w.b[hit], w.p[hit] - start
                step = None
                if b.numel():
                    step = Step(b, rel + start, b.to(self.device), rel.to(self.device), rel + start - self._pads[b])
                self._steps[key] = step
        self._last_step = (sel, start, length, self._steps[key])
        return self._steps[key]

    def _decode_rows(self, start: int, length: int) -> Step:
        """Every row of every example; the device indices are the same at every step of a length."""
        if length not in self._decode:
            n = self.batch.size
            b, rel = torch.arange(n).repeat_interleave(length), torch.arange(length).repeat(n)
            self._decode[length] = (b, rel, b.to(self.device), rel.to(self.device), rel - self._pads[b])
        b, rel, b_dev, rel_dev, unpadded = self._decode[length]
        step = Step(b, rel + start, b_dev, rel_dev, unpadded + start)
        step.union, step.pick, step.last, step.every = self._decode_union(length)
        return step

    def _decode_union(self, length: int) -> tuple:
        if length not in self._unions:
            union = torch.arange(length)
            pick = union.repeat(self.batch.size)
            self._unions[length] = (union.to(self.device), pick, length == 1, length == 1)
        return self._unions[length]

    def stacked(self, starts: list) -> Step:
        """The rows of decode steps computed together (see `attention_rows`): step-major (every
        example of a step), one shared Step per run of steps, so every layer's chunks have the
        same bookkeeping; the rows are already in order, so no device gather."""
        key = tuple(starts)
        if key not in self._stacked:
            n = self.batch.size
            b = torch.arange(n).repeat(len(starts))
            p = torch.tensor(starts, dtype=torch.long).repeat_interleave(n)
            self._stacked[key] = Step(b, p, b, p, p - self._pads[b], stacked=True)
        return self._stacked[key]

    def rows(self, sel: Selection, b: int, start: int, length: int) -> torch.Tensor:
        """Relative row indices of example b that `sel` keeps among padded positions [start, start+length)."""
        pos, decode = self.wanted[sel][b]
        if decode and start >= self.T0:
            return torch.arange(length, device=self.device)
        hit = pos[(pos >= start) & (pos < start + length)]
        return hit - start

    # ---- vision tower -------------------------------------------------------------------------
    def enter_vision(self, grid) -> None:
        """A vision tower call starts: the first covers the batch's images (if any), a later one its videos."""
        n_images = len(self.batch.inputs.get("image_grid_thw", []))
        kind = "image" if not self.vision_calls and n_images else "video"
        items = []
        for b, tm in enumerate(self.batch.token_maps):
            for v in tm.visuals:
                if v.kind == kind:
                    items.append({"b": b, "visual": v.index, "patches": v.num_patches})
        self.vision_calls.append({"grid": grid, "kind": kind, "items": items})

    def vision_parts(self, x: torch.Tensor, spec: SiteSpec) -> tuple[list[dict], list[torch.Tensor], torch.Tensor]:
        """(items, per-visual raster parts, grid) of a vision site's output in this tower call."""
        call = self.vision_calls[-1]
        x = self.adapter.to_raster(x, call["grid"], spec)
        unit = 1 if spec.layout == "patches" else self.adapter.merge_size**2
        sizes = [it["patches"] // unit for it in call["items"]]
        return call["items"], list(torch.split(x, sizes)), call["grid"]
