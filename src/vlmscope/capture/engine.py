"""Execute a capture plan inside one forward or one generate.

Hooks sit on the real modules and are removed in ``finally``. Every step of the language model
(the prefill, then each decode step) covers a range of padded positions; each hook keeps only
the rows its request selected, on the device, and everything lands on the CPU at the end in the
requested dtype. With early stop, the first module nobody needs raises StopForward.

Which module a site lives on, which hook reads it and in what order its rows come are the
adapter's business (its site table); this module has no family-specific branch. Edits
(`capture.edits`) are hooks on the same modules that replace the tensor instead of keeping it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import torch

from ..errors import VlmscopeError
from ..sites import SiteSpec
from ..specs import Selection
from .attention import intervening, row_probabilities
from .edits import EditRequest, apply
from .plan import Request
from .trace import Trace

REDUCERS = {
    "mean": lambda x: x.mean(0),
    "max": lambda x: x.max(0).values,
    "last": lambda x: x[-1],
}


class StopForward(Exception):
    """Raised by a hook once every requested site has been captured."""


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _replace_first(output, new):
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


def _input(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_input(args, kwargs, new):
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


@contextmanager
def hooks(registrations):
    """Register (module, kind, fn) hooks; always remove them, even when the forward raises."""
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


class CaptureRun:
    """State of one run: positions of the current step, buffers, and the hooks that fill them."""

    def __init__(
        self,
        adapter,
        batch,
        requests: list[Request],
        *,
        generating: bool,
        dtype=None,
        early_stop: bool = True,
        edits: Sequence[EditRequest] = (),
    ):
        self.adapter, self.batch, self.requests, self.edits = adapter, batch, requests, list(edits)
        self.generating = generating
        self.dtype = dtype
        self.T0 = batch.length
        self.step_start = self.step_len = 0
        self.device = batch.inputs["input_ids"].device
        self.buffers: dict[str, list[list[torch.Tensor]]] = {r.key: [[] for _ in range(batch.size)] for r in requests}
        self.kept: dict[str, list[list[int]]] = {r.key: [[] for _ in range(batch.size)] for r in requests}
        sequence = [r.selection for r in requests if not r.site.is_vision]
        sequence += [e.selection for e in self.edits if not e.site.is_vision]
        self.wanted = {sel: self._wanted(sel) for sel in sequence}
        self.columns = {r.key: self._columns(r.columns) for r in requests if r.site.is_attention}
        self.vision_calls: list[dict] = []
        self.stop_at = None if generating or not early_stop else self._stop_index()
        self.stopped = False

    # ---- positions ----------------------------------------------------------------------------
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

    def _columns(self, which: str) -> list[torch.Tensor] | None:
        """Padded key positions kept per example for attention rows (None: every key)."""
        if which == "all":
            return None
        out = []
        for b, tm in enumerate(self.batch.token_maps):
            pos = tm.vision_positions() + (tm.text_positions() if which == "vision+text" else [])
            out.append(torch.tensor(sorted(pos), dtype=torch.long, device=self.device) + self.batch.pad[b])
        return out

    def rows(self, sel: Selection, b: int, start: int, length: int) -> torch.Tensor:
        """Relative row indices of example b that `sel` keeps among padded positions [start, start+length)."""
        pos, decode = self.wanted[sel][b]
        if decode and start >= self.T0:
            return torch.arange(length, device=self.device)
        hit = pos[(pos >= start) & (pos < start + length)]
        return hit - start

    def _stop_index(self) -> int | None:
        """Index into the decoder chain [layers..., norm, lm_head] of the first module no request
        needs (None: run to the end)."""
        if not self.requests:
            return None
        ready = [self.adapter.stream_index(r.site) for r in self.requests]
        return None if None in ready else max(ready)

    # ---- hook bodies --------------------------------------------------------------------------
    def _keep_sequence(self, req: Request, x: torch.Tensor):
        """x: [B, L, D] for the positions that end where the current step ends."""
        length = x.shape[1]
        start = self.step_start + self.step_len - length  # logits may cover only the last row
        for b in range(x.shape[0]):
            rel = self.rows(req.selection, b, start, length)
            if rel.numel():
                self.buffers[req.key][b].append(x[b, rel].detach())
                self.kept[req.key][b] += (rel + start - self.batch.pad[b]).tolist()

    def _vision_parts(self, x: torch.Tensor, spec: SiteSpec) -> tuple[list[dict], list[torch.Tensor], torch.Tensor]:
        """(items, per-visual raster parts, grid) of a vision site's output in this tower call."""
        call = self.vision_calls[-1]
        x = self.adapter.to_raster(x, call["grid"], spec)
        unit = 1 if spec.layout == "patches" else self.adapter.merge_size**2
        sizes = [it["patches"] // unit for it in call["items"]]
        return call["items"], list(torch.split(x, sizes)), call["grid"]

    def _keep_vision(self, req: Request, x: torch.Tensor, spec: SiteSpec):
        items, parts, _ = self._vision_parts(x, spec)
        for item, part in zip(items, parts):
            sel = req.selection
            if sel.kind == "image" and sel.index != item["visual"]:
                continue
            self.buffers[req.key][item["b"]].append(part.detach())

    def _edit_sequence(self, edit: EditRequest, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        start = self.step_start + self.step_len - length
        out = None
        for b in range(x.shape[0]):
            rel = self.rows(edit.selection, b, start, length)
            if rel.numel():
                out = x.clone() if out is None else out
                out[b, rel] = apply(edit.fn, x[b, rel], f"{edit.site} (example {b})")
        return x if out is None else out

    def _edit_vision(self, edit: EditRequest, x: torch.Tensor, spec: SiteSpec) -> torch.Tensor:
        items, parts, grid = self._vision_parts(x, spec)
        for i, item in enumerate(items):
            if edit.selection.kind == "image" and edit.selection.index != item["visual"]:
                continue
            parts[i] = apply(edit.fn, parts[i], f"{edit.site} (example {item['b']}, visual {item['visual']})")
        return self.adapter.from_raster(torch.cat(parts), grid, spec)

    def pre_language_model(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        self.step_start += self.step_len
        self.step_len = x.shape[1]

    def pre_visual(self, module, args, kwargs):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        n_images = len(self.batch.inputs.get("image_grid_thw", []))
        kind = "image" if not self.vision_calls and n_images else "video"
        items = []
        for b, tm in enumerate(self.batch.token_maps):
            for v in tm.visuals:
                if v.kind == kind:
                    items.append({"b": b, "visual": v.index, "patches": v.num_patches})
        self.vision_calls.append({"grid": grid, "kind": kind, "items": items})

    def registrations(self):
        """(module, 'pre'|'post', fn) for every hook of this run: step tracking, then edits, then
        captures (which therefore see edited values), then the early stop."""
        ad = self.adapter
        regs = [(ad.language_model, "pre", self.pre_language_model)]
        if any(r.site.is_vision for r in self.requests) or any(e.site.is_vision for e in self.edits):
            regs.append((ad.visual, "pre", self.pre_visual))
        for e in self.edits:
            spec = ad.site_spec(e.site.group)
            regs.append((ad.module(e.site), spec.hook, self._edit_hook(e, spec)))
        for r in self.requests:
            spec = ad.site_spec(r.site.group)
            if spec.hook != "attention":
                regs.append((ad.module(r.site), spec.hook, self._capture_hook(r, spec)))
        if self.stop_at is not None:
            regs.append((ad.decoder_chain()[self.stop_at], "pre", self._stop))
        return regs

    def _stop(self, module, args, kwargs):
        self.stopped = True
        raise StopForward

    def _keep(self, req: Request, spec: SiteSpec, x: torch.Tensor):
        if spec.layout == "sequence":
            self._keep_sequence(req, x)
        else:
            self._keep_vision(req, x, spec)

    def _capture_hook(self, req: Request, spec: SiteSpec):
        if spec.hook == "pre":

            def pre(module, args, kwargs):
                self._keep(req, spec, _input(args, kwargs))

            return pre

        def post(module, args, kwargs, output):
            self._keep(req, spec, _first(output))

        return post

    def _edit_hook(self, edit: EditRequest, spec: SiteSpec):
        def edited(x):
            return self._edit_sequence(edit, x) if spec.layout == "sequence" else self._edit_vision(edit, x, spec)

        if spec.hook == "pre":

            def pre(module, args, kwargs):
                return _with_input(args, kwargs, edited(_input(args, kwargs)))

            return pre

        def post(module, args, kwargs, output):
            return _replace_first(output, edited(_first(output)))

        return post

    # ---- attention rows ----------------------------------------------------------------------
    def attention_layers(self) -> dict[int, list[Request]]:
        out: dict[int, list[Request]] = {}
        for r in self.requests:
            if r.site.is_attention:
                assert r.site.index is not None, "attention sites are per layer"
                out.setdefault(r.site.index, []).append(r)
        return out

    def observe(self, module, query, key, mask, scaling):
        """Called by the attention wrapper for every decoder layer during a recording."""
        for req in self._attn.get(getattr(module, "layer_idx", -1), []):
            self._observe(req, query, key, mask, scaling)

    def _observe(self, req: Request, query, key, mask, scaling):
        length = query.shape[2]
        start = self.step_start + self.step_len - length
        per_b = [self.rows(req.selection, b, start, length) for b in range(query.shape[0])]
        union = torch.unique(torch.cat(per_b)) if per_b else torch.empty(0, dtype=torch.long)
        if union.numel() == 0:
            return
        probs = row_probabilities(query.detach(), key.detach(), mask, union, scaling)
        for b, rel in enumerate(per_b):
            if rel.numel():
                pick = torch.searchsorted(union, rel)
                p = probs[b][:, pick]
                cols = self.columns[req.key]
                if cols is not None:
                    p = p[..., cols[b]]
                self.buffers[req.key][b].append(p.to("cpu", self.dtype or torch.float32))
                self.kept[req.key][b] += (rel + start - self.batch.pad[b]).tolist()

    # ---- running ------------------------------------------------------------------------------
    @contextmanager
    def active(self):
        self._attn = self.attention_layers()
        with ExitStack() as stack:
            stack.enter_context(hooks(self.registrations()))
            if self._attn:
                stack.enter_context(intervening(self))
            yield self

    def finish(self, final_lengths: list[int], limits: list[int] | None = None, token_maps=None) -> Trace:
        """Concatenate, drop rows at positions >= limits[b] (steps an example took after it had
        finished, in a batched generate), reduce on the device, move to the CPU."""
        trace = Trace(token_maps or self.batch.token_maps)
        trace.stopped_early = self.stopped
        for r in self.requests:
            per_example, kept_all = [], []
            for b, parts in enumerate(self.buffers[r.key]):
                kept = self.kept[r.key][b]
                if r.site.is_attention and self.columns[r.key] is not None:
                    x = torch.cat(parts, dim=1)  # [H, n, kept columns]
                elif r.site.is_attention:
                    x = self._attention_tensor(parts, b, final_lengths[b])
                elif not parts and r.site.is_vision and r.reduce == "none":
                    x = self._empty_vision(r.key)  # an example without images (or without image K)
                else:
                    if not parts:
                        raise VlmscopeError(
                            f"nothing captured at {r.key} for example {b} "
                            f"(tokens={r.selection}); is the selection empty?"
                        )
                    x = torch.cat(parts)
                if limits is not None and not r.site.is_vision:
                    keep = torch.tensor([p < limits[b] for p in kept], dtype=torch.bool)
                    x = x[:, keep.to(x.device)] if r.site.is_attention else x[keep.to(x.device)]
                    kept = [p for p in kept if p < limits[b]]
                if r.reduce != "none":
                    x = REDUCERS[r.reduce](x.transpose(0, 1) if r.site.is_attention else x)
                per_example.append(x.to("cpu", self.dtype or x.dtype))
                kept_all.append(kept)
            trace.captures[r.key] = per_example
            if not r.site.is_vision:
                trace.positions[r.key] = kept_all
        return trace

    def _empty_vision(self, key: str) -> torch.Tensor:
        width = next((p[0].shape[-1] for p in self.buffers[key] if p), None)
        if width is None:
            raise VlmscopeError(f"nothing captured at {key}: no example of the batch has an image")
        return torch.zeros(0, width, device=self.device)

    def _attention_tensor(self, parts: list[torch.Tensor], b: int, length: int) -> torch.Tensor:
        """Join [H, r, K_step] pieces into [H, n, length] over the example's unpadded keys."""
        pad = self.batch.pad[b]
        rows = []
        for p in parts:
            p = p[..., pad:]
            if p.shape[-1] < length:
                p = torch.nn.functional.pad(p, (0, length - p.shape[-1]))
            rows.append(p[..., :length])
        return torch.cat(rows, dim=1)
