"""What a tab of the page is, and what every tab shares.

`Shared` holds the page's common components (uploads, prompt, answer, tokens, the status line),
the models and the limits; `Tab` is the base of one tab: its components (`layout`), its events
(`wire`), and what a new generate does to it. Handlers take the browser session's state as an
input (a gr.State) and keep none of their own. Every handler turns an error into one line in the
status (`guard`).
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import VlmscopeError
from .inputs import Limits
from .session import Models, Session


def error_line(e: BaseException) -> str:
    """One line for the page: a VlmscopeError's own message; anything else named by its type."""
    text = str(e) if isinstance(e, VlmscopeError) else f"{e.__class__.__name__}: {e}"
    text = " ".join(text.split()) or e.__class__.__name__
    return f'<div class="vs-error" role="alert">⚠ {html.escape(text[:500])}</div>'


def note_line(text: str) -> str:
    return f'<div class="vs-note">{html.escape(text)}</div>'


def guard(fn):
    """Wrap a handler returning a dict of updates: an exception becomes one line in the status."""

    @functools.wraps(fn)
    def inner(self, *args):
        try:
            return fn(self, *args)
        except Exception as e:  # every failure is one line in the page, never a traceback
            return {self.status: error_line(e)}

    return inner


def need_session(session: Session | None) -> Session:
    if session is None:  # the page's load event has not run yet
        raise VlmscopeError("the page is still loading; try again")
    return session


def gradio():
    import gradio as gr

    return gr


@dataclass
class Shared:
    """The page's common components (Gradio objects), its models and limits, and its tabs by id
    (a tab may read another's controls: masking and compare use the map settings)."""

    models: Models
    limits: Limits
    session: Any  # gr.State holding this browser session's Session
    images: Any
    video: Any
    prompt: Any
    model: Any
    max_new: Any
    status: Any
    answer: Any
    token: Any
    tabs: dict[str, Tab] = field(default_factory=dict)


class Tab:
    """One tab: `layout` builds its components inside its gr.Tab, `wire` its events once every tab
    is laid out. A generate empties what `cleared` says, may update `generate_outputs`, and hands
    the values of `generate_inputs` with the new run to `generated`."""

    title: ClassVar[str] = ""
    id: ClassVar[str] = ""
    css: ClassVar[str] = ""  # the tab's own rules of the page's style sheet

    def __init__(self, shared: Shared):
        self.shared, self.status = shared, shared.status

    @classmethod
    def wanted(cls, models: Models) -> bool:
        """Whether the page has this tab for these models."""
        return True

    def layout(self, gr) -> None:
        raise NotImplementedError

    def wire(self, gr) -> None:
        pass

    def cleared(self) -> dict:
        return {}

    def generate_outputs(self) -> list:
        return []

    def generate_inputs(self) -> list:
        return []

    def generated(self, session: Session, run, *values) -> dict:
        return {}

    def nothing(self) -> dict:
        """No change on the page (every guarded handler has the status line among its outputs)."""
        return {self.status: gradio().skip()}
