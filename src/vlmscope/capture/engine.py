"""Execute a capture plan inside one forward or one generate.

Hooks sit on the real modules and are removed in ``finally``. Every step of the language model
(the prefill, then each decode step) covers a range of padded positions; each hook keeps only
the rows its request selected, on the device, and everything lands on the CPU at the end in the
requested dtype. With early stop, the first module nobody needs raises StopForward.

`CaptureRun` only puts together the units that do the work, each in its own module:

    selection.py        which rows each token selection keeps, per example and per step
    keepers.py          the captures of sequence and vision sites, kept on the device
    edits.py            the edits, applied by hooks on the same modules as captures
    attention_rows.py   attention rows: observed, queued for decode steps, joined at the end
    hooks.py            which hook goes where, step tracking, prompt-only hooks, early stop
    assembly.py         the kept rows of a finished run into a Trace

Which module a site lives on, which hook reads it and in what order its rows come are the
adapter's business (its site table); no unit has a family-specific branch.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager

import torch

from .assembly import Assembly
from .attention import intervening
from .attention_rows import AttentionRows
from .edits import Editor, EditRequest
from .hooks import Wiring
from .keepers import Keepers
from .plan import Request
from .selection import Selector
from .trace import Trace


class CaptureRun:
    """One run's captures and edits: `active()` around the model call, then `finish()`."""

    def __init__(
        self,
        adapter,
        batch,
        requests: list[Request],
        *,
        generating: bool,
        dtype: torch.dtype | None = None,
        early_stop: bool = True,
        edits: Sequence[EditRequest] = (),
    ):
        self.batch, self.requests, self.dtype = batch, requests, dtype
        edits = list(edits)
        sequence = [r.selection for r in requests if not r.site.is_vision]
        sequence += [e.selection for e in edits if not e.site.is_vision]
        self.selector = Selector(adapter, batch, sequence, generating=generating)
        self.keepers = Keepers(adapter, batch, self.selector, requests)
        self.attention = AttentionRows(batch, self.selector, requests)
        editor = Editor(adapter, self.selector)
        self.wiring = Wiring(adapter, requests, edits, self.selector, self.keepers, editor, early_stop=early_stop)

    @contextmanager
    def active(self):
        with ExitStack() as stack:
            stack.enter_context(self.wiring.installed())
            if self.attention.by_layer:
                stack.enter_context(intervening(self.attention))
            yield self
        self.keepers.norm = None

    def finish(self, final_lengths: list[int], limits: list[int] | None = None, token_maps=None) -> Trace:
        """The Trace: rows at positions >= limits[b] (steps an example took after it had finished,
        in a batched generate) dropped; attention rows per example over `final_lengths` keys."""
        assembly = Assembly(self.batch, self.requests, self.keepers, self.attention, self.dtype, limits)
        return assembly.trace(final_lengths, token_maps or self.batch.token_maps, self.wiring.stopped)
