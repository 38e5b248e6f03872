"""The hooks of one run: which hook goes on which module, in what order, and the early stop.

Every hook is registered by `hooks()` and removed in its ``finally``, even when the forward
raises. In order: step tracking on the language model (and on the vision tower), then edits, then
captures (which therefore see edited values), then the early stop: with early stop, the first
module of the decoder chain that no request needs raises StopForward. Hooks that only serve the
prompt (vision sites, selections of prompt rows only, the final norm for logits) are removed when
the first decode step starts, so the decode steps run the bare model. Which module a site lives
on and which hook reads it are the adapter's business (its site table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch

from .edits import Editor, EditRequest
from .keepers import Keepers
from .plan import Request
from .selection import Selector


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


def reading(kind: str, body: Callable[[torch.Tensor], None]):
    """A 'pre' or 'post' hook handing the module's input or output tensor to `body`."""
    if kind == "pre":

        def pre(module, args, kwargs):
            body(_input(args, kwargs))

        return pre

    def post(module, args, kwargs, output):
        body(_first(output))

    return post


def replacing(kind: str, body: Callable[[torch.Tensor], torch.Tensor]):
    """A 'pre' or 'post' hook replacing the module's input or output tensor with `body` of it."""
    if kind == "pre":

        def pre(module, args, kwargs):
            return _with_input(args, kwargs, body(_input(args, kwargs)))

        return pre

    def post(module, args, kwargs, output):
        return _replace_first(output, body(_first(output)))

    return post


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


class Wiring:
    """Every hook of one run, and the state they keep: prompt-only handles, whether it stopped."""

    def __init__(
        self,
        adapter,
        requests: list[Request],
        edits: Sequence[EditRequest],
        selector: Selector,
        keepers: Keepers,
        editor: Editor,
        *,
        early_stop: bool,
    ):
        self.adapter, self.requests, self.edits = adapter, requests, edits
        self.selector, self.keepers, self.editor = selector, keepers, editor
        self.generating = selector.generating
        self.stop_at = None if self.generating or not early_stop else self._stop_index()
        self.stopped = False
        self._prefill_only: list = []  # hook handles nobody needs once decoding starts

    def _stop_index(self) -> int | None:
        """Index into the decoder chain [layers..., norm, lm_head] of the first module no request
        needs (None: run to the end)."""
        if not self.requests:
            return None
        ready = [self.adapter.stream_index(r.site) for r in self.requests]
        return None if None in ready else max(ready)

    def registrations(self) -> list[tuple]:
        """(module, 'pre'|'post', fn, prefill only) for every hook of this run: step tracking, then
        edits, then captures (which therefore see edited values), then the early stop."""
        ad = self.adapter
        regs = [(ad.language_model, "pre", self.on_step, False)]
        if any(r.site.is_vision for r in self.requests) or any(e.site.is_vision for e in self.edits):
            regs.append((ad.visual, "pre", self.on_vision, True))
        for e in self.edits:
            spec = ad.site_spec(e.site.group)
            edit = replacing(spec.hook, self.editor.editor(e, spec))
            regs.append((ad.module(e.site), spec.hook, edit, self._prefill_only_site(e)))
        for r in self.requests:
            spec = ad.site_spec(r.site.group)
            if spec.hook != "attention":
                keep = reading(spec.hook, self.keepers.keeper(r, spec))
                regs.append((ad.module(r.site), spec.hook, keep, self._prefill_only_site(r)))
        if self.generating and any(r.site.group == "logits" for r in self.requests):
            regs.append((ad.language_model.norm, "post", reading("post", self.keepers.keep_norm), True))
        if self.stop_at is not None:
            regs.append((ad.decoder_chain()[self.stop_at], "pre", self._stop, False))
        return regs

    def _prefill_only_site(self, r: Request | EditRequest) -> bool:
        return self.generating and (r.site.is_vision or not self.selector.flat[r.selection].decode)

    def on_step(self, module, args, kwargs):
        """Before each language-model step: where its positions start; once decoding, the
        hooks that only keep prompt rows are done."""
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        sel = self.selector
        sel.step_start += sel.step_len  # this step starts where the last one ended
        sel.step_len = x.shape[1]
        self.keepers.norm = None
        if sel.step_start >= sel.T0 and self._prefill_only:
            for h in self._prefill_only:
                h.remove()
            self._prefill_only = []

    def on_vision(self, module, args, kwargs):
        self.selector.enter_vision(kwargs.get("grid_thw", args[1] if len(args) > 1 else None))

    def _stop(self, module, args, kwargs):
        self.stopped = True
        raise StopForward

    @contextmanager
    def installed(self):
        """Every hook registered while inside; removed on the way out, even when the forward raises."""
        regs = self.registrations()
        with hooks([r[:3] for r in regs]) as handles:
            self._prefill_only = [h for h, r in zip(handles, regs) if r[3]]
            yield
        self._prefill_only = []
