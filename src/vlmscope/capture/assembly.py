"""A finished run's kept rows, assembled into a Trace.

Each request's chunks are joined per example in position order (the bookkeeping is computed once
for requests over the same rows), rows at positions an example reached after it had finished are
dropped, reductions happen on the device, and everything lands on the CPU in the requested dtype:
the attention rows of every layer in one transfer.
"""

from __future__ import annotations

import torch

from ..errors import VlmscopeError
from .attention_rows import AttentionRows
from .keepers import Keepers
from .plan import REDUCERS, Request
from .trace import Trace


class Assembly:
    """One `finish` of a run: the joins it shares between requests, and the Trace it builds."""

    def __init__(
        self,
        batch,
        requests: list[Request],
        keepers: Keepers,
        attention: AttentionRows,
        dtype: torch.dtype | None,
        limits: list[int] | None,
    ):
        self.batch, self.requests, self.keepers, self.attention = batch, requests, keepers, attention
        self.dtype, self.limits = dtype, limits
        self._joins: dict[tuple, tuple] = {}  # bookkeeping shared by requests over the same rows

    def trace(self, final_lengths: list[int], token_maps, stopped: bool) -> Trace:
        """Join the steps, drop rows at positions >= limits[b] (steps an example took after it had
        finished, in a batched generate), reduce on the device, move to the CPU."""
        trace = Trace(token_maps)
        trace.stopped_early = stopped
        attention = [r for r in self.requests if r.site.is_attention]
        self.attention.take_queued()
        # per example and kept columns on the device, then one transfer for every layer: the
        # CPU receives only what it returns, already laid out
        split = []
        for r in attention:
            order, sizes, kept = self._joined(r, self.attention.bookkeeping(r))
            split.append(self.attention.per_example(r, order, sizes, final_lengths))
            trace.positions[r.key] = kept
        on_cpu = iter(_to_cpu([p for parts in split for p in parts], self.dtype or torch.float32))
        for r, parts in zip(attention, split):
            trace.captures[r.key] = [next(on_cpu) for _ in parts]
        for r in self.requests:
            if r.site.is_vision:
                trace.captures[r.key] = [self._vision_capture(r, b) for b in range(self.batch.size)]
            elif not r.site.is_attention:
                trace.captures[r.key], trace.positions[r.key] = self._sequence_captures(r)
        trace.captures = {r.key: trace.captures[r.key] for r in self.requests}  # the plan's order
        trace.positions = {r.key: trace.positions[r.key] for r in self.requests if r.key in trace.positions}
        self._joins = {}
        return trace

    def _joined(self, r: Request, chunks: list[tuple[torch.Tensor, torch.Tensor]]):
        """Every kept row of `r` grouped by example, in position order: (order of the rows of the
        joined chunks, rows per example, their positions per example). `chunks`: (example,
        unpadded position) of each chunk's rows."""
        same = (r.selection, *(id(t) for c in chunks for t in c))  # tensors alive until `trace` ends
        if same not in self._joins:
            self._joins[same] = self._join(chunks, r)
        order, sizes, kept = self._joins[same]
        return order, sizes, [list(p) for p in kept]

    def _join(self, chunks: list, r: Request):
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
        if self.limits is not None:
            order = order[pos[order] < torch.tensor(self.limits, dtype=torch.long)[b[order]]]
            counts = torch.bincount(b[order], minlength=self.batch.size)
        sizes = counts.tolist()
        return order, sizes, [p.tolist() for p in torch.split(pos[order], sizes)]

    def _sequence_captures(self, r: Request):
        chunks = self.keepers.chunks[r.key]
        order, sizes, kept = self._joined(r, [c[1:] for c in chunks])
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

    def _vision_capture(self, r: Request, b: int) -> torch.Tensor:
        parts = self.keepers.buffers[r.key][b]
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
        width = next((p[0].shape[-1] for p in self.keepers.buffers[key] if p), None)
        if width is None:
            raise VlmscopeError(f"nothing captured at {key}: no example of the batch has an image")
        return torch.zeros(0, width, device=self.keepers.selector.device)


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
