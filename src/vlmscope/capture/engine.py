"""Execute a capture plan inside one forward or one generate.

Hooks sit on the real modules and are removed in ``finally``. Every step of the language model
(the prefill, then each decode step) covers a range of padded positions; each hook keeps only
the rows its request selected, on the device, and everything lands on the CPU at the end in the
requested dtype. With early stop, the first module nobody needs raises StopForward.

Bookkeeping is vectorised over the batch: each selection is resolved once into (example, position)
pairs, each step keeps its rows with one gather per hook, and `finish` splits them per example.
Attention rows of decode steps are queued and computed together in `finish` (DecodeRows).
Hooks whose selection only covers prompt positions are removed when the first decode step starts.

Which module a site lives on, which hook reads it and in what order its rows come are the
adapter's business (its site table); this module has no family-specific branch. Edits
(`capture.edits`) are hooks on the same modules that replace the tensor instead of keeping it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import VlmscopeError
from ..sites import SiteSpec
from ..specs import Selection
from .attention import DecodeRows, intervening, last_row_probabilities, row_probabilities, take_together
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
    """Register (module, kind, fn) hooks; always remove them, even when the forward raises.
    Yields the handles, in the order of `registrations`."""
    handles = []
    try:
        for module, kind, fn in registrations:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
        yield handles
    finally:
        for h in handles:
            h.remove()


@dataclass
class _Rows:
    """One selection resolved over the batch: the kept prompt rows as (example, padded position)
    pairs sorted by example then position, and whether decode steps are kept too."""

    b: torch.Tensor  # [n] long, CPU
    p: torch.Tensor  # [n] long, CPU
    decode: bool


@dataclass
class _Step:
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
        # vision sites: per-example parts; sequence and attention sites: per-step chunks
        # (rows, example of each row, unpadded position of each row)
        self.buffers: dict[str, list[list[torch.Tensor]]] = {r.key: [[] for _ in range(batch.size)] for r in requests}
        self.chunks: dict[str, list[tuple]] = {r.key: [] for r in requests}
        sequence = [r.selection for r in requests if not r.site.is_vision]
        sequence += [e.selection for e in self.edits if not e.site.is_vision]
        self.wanted = {sel: self._wanted(sel) for sel in dict.fromkeys(sequence)}
        self.flat = {sel: self._flat(sel) for sel in self.wanted}
        self._steps: dict[tuple, _Step | None] = {}
        self._last_step: tuple | None = None
        self._decode: dict[int, tuple] = {}
        self._pads = torch.tensor(batch.pad, dtype=torch.long)
        self._prefill_only: list = []  # hook handles nobody needs once decoding starts
        self._joins: dict[tuple, tuple] = {}  # in `finish`: bookkeeping shared by requests over the same rows
        self._norm: torch.Tensor | None = None  # the prefill's final norm, for the logits transformers skips
        # attention rows of decode steps, computed at the end
        self._queued = {r.key: DecodeRows() for r in requests if r.site.is_attention}
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

    def _columns(self, which: str) -> list[torch.Tensor | slice] | None:
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

    def _flat(self, sel: Selection) -> _Rows:
        per = self.wanted[sel]
        b = torch.cat([torch.full((len(pos),), i, dtype=torch.long) for i, (pos, _) in enumerate(per)])
        p = torch.cat([pos.cpu() for pos, _ in per])
        return _Rows(b, p, any(decode for _, decode in per))

    def step_rows(self, sel: Selection, start: int, length: int) -> _Step | None:
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
                    step = _Step(b, rel + start, b.to(self.device), rel.to(self.device), rel + start - self._pads[b])
                self._steps[key] = step
        self._last_step = (sel, start, length, self._steps[key])
        return self._steps[key]

    def _decode_rows(self, start: int, length: int) -> _Step:
        """Every row of every example; the device indices are the same at every step of a length."""
        if length not in self._decode:
            n = self.batch.size
            b, rel = torch.arange(n).repeat_interleave(length), torch.arange(length).repeat(n)
            self._decode[length] = (b, rel, b.to(self.device), rel.to(self.device), rel - self._pads[b])
        b, rel, b_dev, rel_dev, unpadded = self._decode[length]
        step = _Step(b, rel + start, b_dev, rel_dev, unpadded + start)
        step.union, step.pick, step.last, step.every = self._decode_union(length)
        return step

    def _decode_union(self, length: int):
        key = ("union", length)
        if key not in self._steps:
            union = torch.arange(length)
            pick = union.repeat(self.batch.size)
            self._steps[key] = (union.to(self.device), pick, length == 1, length == 1)  # type: ignore[assignment]
        return self._steps[key]

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
        end = self.step_start + self.step_len
        start = end - length
        if start > self.step_start and self._norm is not None and req.site.group == "logits":
            # transformers computes the prefill's logits at its last position only: the rows
            # before it come from the final norm through the same head
            step = self.step_rows(req.selection, self.step_start, start - self.step_start)
            if step is not None:
                head = self.adapter.lm_head
                h = self._norm[step.b_dev, step.rel_dev]
                self.chunks[req.key].append((F.linear(h, head.weight, head.bias), step.b, step.pos))
        step = self.step_rows(req.selection, start, length)
        if step is not None:
            self.chunks[req.key].append((x.detach()[step.b_dev, step.rel_dev], step.b, step.pos))

    def _keep_norm(self, module, args, kwargs, output):
        if self.step_start < self.T0:
            self._norm = _first(output).detach()

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
        self._norm = None
        if self.step_start >= self.T0 and self._prefill_only:
            for h in self._prefill_only:  # decoding: hooks that only keep prompt rows are done
                h.remove()
            self._prefill_only = []

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
        """(module, 'pre'|'post', fn, prefill only) for every hook of this run: step tracking, then
        edits, then captures (which therefore see edited values), then the early stop."""
        ad = self.adapter
        regs = [(ad.language_model, "pre", self.pre_language_model, False)]
        if any(r.site.is_vision for r in self.requests) or any(e.site.is_vision for e in self.edits):
            regs.append((ad.visual, "pre", self.pre_visual, True))
        for e in self.edits:
            spec = ad.site_spec(e.site.group)
            regs.append((ad.module(e.site), spec.hook, self._edit_hook(e, spec), self._prefill_only_site(e)))
        for r in self.requests:
            spec = ad.site_spec(r.site.group)
            if spec.hook != "attention":
                regs.append((ad.module(r.site), spec.hook, self._capture_hook(r, spec), self._prefill_only_site(r)))
        if self.generating and any(r.site.group == "logits" for r in self.requests):
            regs.append((ad.language_model.norm, "post", self._keep_norm, True))
        if self.stop_at is not None:
            regs.append((ad.decoder_chain()[self.stop_at], "pre", self._stop, False))
        return regs

    def _prefill_only_site(self, r) -> bool:
        return self.generating and (r.site.is_vision or not self.flat[r.selection].decode)

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
        """Called by the attention wrapper for every decoder layer during a recording. A decode
        step (one new row, every example keeping it, or none) is only queued: no bookkeeping per
        layer and step, its rows are computed with the others' in `finish`."""
        length = query.shape[2]
        start = self.step_start + self.step_len - length
        decoding = length == 1 and start >= self.T0
        for req, chunks, queued, keeps_decode in self._attn.get(getattr(module, "layer_idx", -1), ()):
            if not decoding:
                self._observe_prompt(req, chunks, queued, query, key, mask, scaling, start, length)
            elif keeps_decode:
                if not queued.extends(key):
                    self._flush(queued, chunks)
                queued.add(query, key, mask, scaling, start)

    def _observe_prompt(self, req: Request, chunks: list, queued: DecodeRows, query, key, mask, scaling, start, length):
        step = self.step_rows(req.selection, start, length)
        if step is None:
            return
        self._flush(queued, chunks)  # chunks stay in step order
        if step.union is None:  # the query rows any example keeps, and each kept row's index among them
            union = torch.unique(step.p - start)
            step.union, step.pick = union.to(self.device), torch.searchsorted(union, step.p - start)
            step.last = union.tolist() == [length - 1]
            step.every = step.last and step.b.tolist() == list(range(self.batch.size))
        if step.last:  # the last row only: sliced, and no causal mask to build
            probs = last_row_probabilities(query.detach()[:, :, -1:].contiguous(), key.detach(), mask, scaling)
        else:
            probs = row_probabilities(query.detach(), key.detach(), mask, step.union, scaling)
        chunks.append((probs, step))

    def _flush(self, queued: DecodeRows, chunks: list) -> None:
        if len(queued):
            self._add_stacked(queued.take(), chunks)

    def _add_stacked(self, taken: list[tuple[torch.Tensor, list]], chunks: list) -> None:
        """Computed decode rows as chunks: step-major (every example of a step), one shared
        `_Step` per run of steps, so every layer's chunks have the same bookkeeping."""
        n = self.batch.size
        for probs, starts in taken:
            key = ("stacked", *starts)
            if key not in self._steps:
                b = torch.arange(n).repeat(len(starts))
                p = torch.tensor(starts, dtype=torch.long).repeat_interleave(n)
                self._steps[key] = _Step(b, p, b, p, p - self._pads[b], stacked=True)  # stacked: no device gather
            chunks.append((probs, self._steps[key]))

    # ---- running ------------------------------------------------------------------------------
    @contextmanager
    def active(self):
        self._attn = {
            i: [(r, self.chunks[r.key], self._queued[r.key], self.flat[r.selection].decode) for r in reqs]
            for i, reqs in self.attention_layers().items()
        }
        with ExitStack() as stack:
            regs = self.registrations()
            handles = stack.enter_context(hooks([r[:3] for r in regs]))
            self._prefill_only = [h for h, r in zip(handles, regs) if r[3]]
            if self._attn:
                stack.enter_context(intervening(self))
            yield self
        self._prefill_only, self._norm = [], None

    def finish(self, final_lengths: list[int], limits: list[int] | None = None, token_maps=None) -> Trace:
        """Join the steps, drop rows at positions >= limits[b] (steps an example took after it had
        finished, in a batched generate), reduce on the device, move to the CPU."""
        trace = Trace(token_maps or self.batch.token_maps)
        trace.stopped_early = self.stopped
        attention = [r for r in self.requests if r.site.is_attention]
        pending = [(key, queued) for key, queued in self._queued.items() if len(queued)]
        for (key, _), taken in zip(pending, take_together([q for _, q in pending])):
            self._add_stacked(taken, self.chunks[key])
        self._joins = {}
        # per example and kept columns on the device, then one transfer for every layer: the
        # CPU receives only what it returns, already laid out
        split = []
        for r in attention:
            x, sizes, kept = self._attention_rows(r, limits)
            split.append(self._attention_split(r, x, sizes, final_lengths))
            trace.positions[r.key] = kept
        on_cpu = iter(_to_cpu([p for parts in split for p in parts], self.dtype or torch.float32))
        for r, parts in zip(attention, split):
            trace.captures[r.key] = [next(on_cpu) for _ in parts]
        for r in self.requests:
            if r.site.is_vision:
                trace.captures[r.key] = [self._vision_capture(r, b) for b in range(self.batch.size)]
            elif not r.site.is_attention:
                trace.captures[r.key], trace.positions[r.key] = self._sequence_captures(r, limits)
        trace.captures = {r.key: trace.captures[r.key] for r in self.requests}  # the plan's order
        trace.positions = {r.key: trace.positions[r.key] for r in self.requests if r.key in trace.positions}
        self._joins = {}
        return trace

    def _joined(self, r: Request, limits: list[int] | None):
        """Every kept row of `r` grouped by example, in position order: (order of the rows of the
        joined chunks, rows per example, their positions per example)."""
        chunks = [(c[1].b, c[1].pos) if r.site.is_attention else c[1:] for c in self.chunks[r.key]]
        same = (r.selection, *(id(t) for c in chunks for t in c))  # tensors alive until `finish` ends
        if same not in self._joins:
            self._joins[same] = self._join(chunks, r, limits)
        order, sizes, kept = self._joins[same]
        return order, sizes, [list(p) for p in kept]

    def _join(self, chunks: list, r: Request, limits: list[int] | None):
        b = torch.cat([c[0] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
        pos = torch.cat([c[1] for c in chunks]) if chunks else torch.zeros(0, dtype=torch.long)
        counts = torch.bincount(b, minlength=self.batch.size)
        empty = (counts == 0).nonzero()
        if len(empty):
            raise VlmscopeError(
                f"nothing captured at {r.key} for example {int(empty[0])} (tokens={r.selection}); "
                "is the selection empty?"
            )
        order = torch.argsort(b, stable=True)
        if limits is not None:
            order = order[pos[order] < torch.tensor(limits, dtype=torch.long)[b[order]]]
            counts = torch.bincount(b[order], minlength=self.batch.size)
        sizes = counts.tolist()
        return order, sizes, [p.tolist() for p in torch.split(pos[order], sizes)]

    def _sequence_captures(self, r: Request, limits: list[int] | None):
        order, sizes, kept = self._joined(r, limits)
        chunks = self.chunks[r.key]
        x = chunks[0][0] if len(chunks) == 1 else torch.cat([c[0] for c in chunks])
        x = x[order.to(x.device)]
        dtype = self.dtype or x.dtype
        if r.reduce == "none":
            return list(torch.split(x.to("cpu", dtype), sizes)), kept
        if r.reduce == "last":
            last = torch.tensor(sizes).cumsum(0) - 1
            return list(x[last.to(x.device)].to("cpu", dtype).unbind(0)), kept
        parts = torch.split(x, sizes)
        return [REDUCERS[r.reduce](p).to("cpu", dtype) for p in parts], kept

    def _attention_rows(self, r: Request, limits: list[int] | None):
        """(every kept row of `r` on the device [rows, H, width], grouped by example; rows per
        example; their positions)."""
        order, sizes, kept = self._joined(r, limits)
        chunks = self.chunks[r.key]
        width = max(c[0].shape[-1] for c in chunks)
        n = sum(c[0].shape[0] if c[1].every or c[1].stacked else len(c[1].b) for c in chunks)
        x = chunks[0][0].new_zeros((n, chunks[0][0].shape[1], width))  # zero-padded keys
        i = 0
        for probs, step in chunks:  # one copy per chunk
            if step.stacked:
                part = probs
            elif step.every:
                part = probs[:, :, 0]
            else:
                part = probs[step.b_dev, :, step.pick.to(probs.device)]
            x[i : i + len(part), :, : part.shape[-1]] = part
            i += len(part)
        if len(order) != n or not bool((order == torch.arange(n)).all()):
            x = x[order.to(x.device)]
        return x, sizes, kept

    def _attention_split(self, r: Request, x: torch.Tensor, sizes: list[int], final_lengths: list[int]):
        """Per example [H, n, T] (T: its final unpadded length) or [H, n, kept columns]."""
        cols = self.columns[r.key]
        out = []
        for b, part in enumerate(torch.split(x, sizes)):
            part = part.transpose(0, 1)  # [H, n, width]
            if cols is not None:
                c = cols[b]
                part = part[..., c if isinstance(c, slice) else c.to(part.device)]
            else:
                pad = self.batch.pad[b]
                part = part[..., pad : pad + final_lengths[b]]
                if part.shape[-1] < final_lengths[b]:
                    part = F.pad(part, (0, final_lengths[b] - part.shape[-1]))
            if r.reduce != "none":
                part = REDUCERS[r.reduce](part.transpose(0, 1))
            out.append(part.contiguous() if r.reduce == "none" else part)
        return out

    def _vision_capture(self, r: Request, b: int) -> torch.Tensor:
        parts = self.buffers[r.key][b]
        if not parts:
            if r.reduce != "none":
                raise VlmscopeError(
                    f"example {b} has no image: {r.key} reduced by {r.reduce} is undefined for it; "
                    "capture it with reduce='none' (an empty [0, C] tensor) or leave text-only examples out"
                )
            x = self._empty_vision(r.key)
        else:
            x = torch.cat(parts)
        if r.reduce != "none":
            x = REDUCERS[r.reduce](x)
        return x.to("cpu", self.dtype or x.dtype)

    def _empty_vision(self, key: str) -> torch.Tensor:
        width = next((p[0].shape[-1] for p in self.buffers[key] if p), None)
        if width is None:
            raise VlmscopeError(f"nothing captured at {key}: no example of the batch has an image")
        return torch.zeros(0, width, device=self.device)


def _to_cpu(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """`tensors` on the CPU in `dtype`; from an accelerator in one transfer (one sync, not one per layer)."""
    if len(tensors) < 2 or tensors[0].device.type == "cpu":
        return [t.to("cpu", dtype) for t in tensors]
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    if flat.device.type == "cuda":  # into page-locked memory: several times the pageable copy's speed
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        flat = host.copy_(flat)
    else:
        flat = flat.to("cpu")
    # views of one buffer: each is contiguous in its own shape
    return [p.view(t.shape) for p, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]
