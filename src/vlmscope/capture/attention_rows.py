"""Attention rows of a capture, from the attention wrapper to each example's [H, n, T].

How a row gets into the trace:

- a prompt step (the prefill, or a teacher-forced forward): `observe` computes at once the query
  rows the selection keeps (`row_probabilities`; the last row alone without a causal mask) and
  keeps them as a chunk with the step's rows (`selection.Step`);
- a decode step (one new row, which every example keeps, or none): `observe` only queues the
  step's q, its mask and the newest key (`attention.DecodeRows`). The queue is computed when the
  key stops growing (`_flush`) or at the end (`take_queued`: layers that queued the same steps in
  one matmul, `attention.take_together`), as stacked chunks, step-major;
- at the end (`per_example`), every chunk's kept rows are copied into one zero-padded
  [rows, H, width] tensor in example order, split per example, cut to its columns and reduced, on
  the device; `assembly` moves every layer to the CPU in one transfer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import DecodeRows, last_row_probabilities, row_probabilities, take_together
from .plan import REDUCERS, Request
from .selection import Selector, Step


class AttentionRows:
    """An observer for `attention.intervening`: the attention rows of one run's attention requests."""

    def __init__(self, batch, selector: Selector, requests: list[Request]):
        self.batch, self.selector = batch, selector
        self.T0 = batch.length
        attention = [r for r in requests if r.site.is_attention]
        self.chunks: dict[str, list[tuple[torch.Tensor, Step]]] = {r.key: [] for r in attention}
        # attention rows of decode steps, computed at the end
        self.queued = {r.key: DecodeRows() for r in attention}
        self.columns = {r.key: selector.columns(r.columns) for r in attention}
        # per decoder layer: what `observe` needs of each request there
        self.by_layer: dict[int, list[tuple[Request, list, DecodeRows, bool]]] = {}
        for r in attention:
            assert r.site.index is not None, "attention sites are per layer"
            entry = (r, self.chunks[r.key], self.queued[r.key], selector.flat[r.selection].decode)
            self.by_layer.setdefault(r.site.index, []).append(entry)

    # ---- during the run -----------------------------------------------------------------------
    def observe(self, module, query, key, mask, scaling):
        """Called by the attention wrapper for every decoder layer during a recording. A decode
        step (one new row, every example keeping it, or none) is only queued: no bookkeeping per
        layer and step, its rows are computed with the others' in `take_queued`."""
        length = query.shape[2]
        sel = self.selector
        start = sel.step_start + sel.step_len - length
        decoding = length == 1 and start >= self.T0
        for req, chunks, queued, keeps_decode in self.by_layer.get(getattr(module, "layer_idx", -1), ()):
            if not decoding:
                self._observe_prompt(req, chunks, queued, query, key, mask, scaling, start, length)
            elif keeps_decode:
                if not queued.extends(key):
                    self._flush(queued, chunks)
                queued.add(query, key, mask, scaling, start)

    def _observe_prompt(self, req: Request, chunks: list, queued: DecodeRows, query, key, mask, scaling, start, length):
        step = self.selector.step_rows(req.selection, start, length)
        if step is None:
            return
        self._flush(queued, chunks)  # chunks stay in step order
        if step.union is None:  # the query rows any example keeps, and each kept row's index among them
            union = torch.unique(step.p - start)
            step.union, step.pick = union.to(self.selector.device), torch.searchsorted(union, step.p - start)
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
        """Computed decode rows as chunks, each with the Step of its run of steps."""
        for probs, starts in taken:
            chunks.append((probs, self.selector.stacked(starts)))

    # ---- at the end ---------------------------------------------------------------------------
    def take_queued(self) -> None:
        """Compute every decode step still queued, layers with the same steps together."""
        pending = [(key, queued) for key, queued in self.queued.items() if len(queued)]
        for (key, _), taken in zip(pending, take_together([q for _, q in pending])):
            self._add_stacked(taken, self.chunks[key])

    def bookkeeping(self, r: Request) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(example, unpadded position) of the rows of each chunk of `r`, in chunk order."""
        return [(step.b, step.pos) for _, step in self.chunks[r.key]]

    def per_example(
        self, r: Request, order: torch.Tensor, sizes: list[int], final_lengths: list[int]
    ) -> list[torch.Tensor]:
        """Per example, on the device: [H, n, T] (T: its final unpadded length) or [H, n, kept
        columns], reduced over n unless the request says none. `order`: the joined rows' order
        (example, then position; see `assembly`), `sizes`: rows per example."""
        return self._split(r, self._rows(r, order), sizes, final_lengths)

    def _rows(self, r: Request, order: torch.Tensor) -> torch.Tensor:
        """Every kept row of `r` on the device [rows, H, width], grouped by example."""
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
                assert step.pick is not None
                part = probs[step.b_dev, :, step.pick.to(probs.device)]
            x[i : i + len(part), :, : part.shape[-1]] = part
            i += len(part)
        if len(order) != n or not bool((order == torch.arange(n)).all()):
            x = x[order.to(x.device)]
        return x

    def _split(self, r: Request, x: torch.Tensor, sizes: list[int], final_lengths: list[int]) -> list[torch.Tensor]:
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
