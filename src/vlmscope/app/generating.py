"""The handlers of the page's common part: generate and stop.

A generate streams the answer into the page (`stream.stream_answer`, cancellable by Stop), then
keeps the new run in the browser session's state and lets every tab show it: each tab first says
what a new generate empties (`Tab.cleared`), and gets the run with its own controls' values at
the end (`Tab.generated`; the Maps tab draws the first token's map).
"""

from __future__ import annotations

import time
from typing import Any

from .inputs import build_example
from .maps import Run, capture_plan, token_labels
from .tab import Shared, Tab, error_line, gradio, need_session, note_line


class Generating:
    """Generate and Stop for one page; the session state comes in with each event."""

    def __init__(self, shared: Shared, tabs: list[Tab]):
        self.shared, self.tabs = shared, tabs
        self.models, self.limits = shared.models, shared.limits

    def on_generate(self, session, images, video, prompt, model, max_new, *tab_values):
        s = self.shared
        try:
            session = need_session(session)
            name, scope = self.models.get(model)
            video_path = video if isinstance(video, str) or video is None else getattr(video, "name", None)
            example, frames = build_example(
                prompt, images, video_path, self.limits, scope.adapter.temporal_patch_size or 2
            )
            max_new = min(int(max_new), self.limits.max_new_tokens)
        except Exception as e:
            yield {s.status: error_line(e)}
            return
        gr = gradio()
        cleared: dict[Any, Any] = {
            s.status: note_line(f"generating with {name}…"),
            s.answer: "",
            s.token: gr.update(choices=[], value=None),
        }
        for tab in self.tabs:
            cleared.update(tab.cleared())
        yield cleared
        started = time.perf_counter()
        answer = None
        try:
            for item in _stream(scope, example, capture_plan(scope), max_new, session.cancel, self.models.locks[name]):
                if isinstance(item, str):
                    yield {s.answer: item}
                else:
                    answer = item
        except Exception as e:
            yield {s.status: error_line(e)}
            return
        assert answer is not None
        if not answer.ids:
            yield {s.status: note_line("stopped before the first token")}
            return
        run = Run(name, scope, example, answer, frames)
        session.new_run(run)
        ad = scope.adapter
        stopped = " (stopped)" if session.cancel.is_set() else ""
        labels = token_labels(answer.tokens)
        out: dict[Any, Any] = {
            s.answer: answer.text,
            s.token: gr.update(choices=labels, value=labels[0]),
            s.status: note_line(
                f"{len(answer.ids)} tokens in {time.perf_counter() - started:.2f} s{stopped}; "
                f"rows of all {ad.num_layers} layers captured"
            ),
        }
        i = 0
        for tab in self.tabs:  # each tab's share of the values, in the order of the inputs
            n = len(tab.generate_inputs())
            out.update(tab.generated(session, run, *tab_values[i : i + n]))
            i += n
        yield out

    def on_stop(self, session):
        if session is not None:
            session.cancel.set()
        return note_line("stopping…")


def _stream(*args):
    from .stream import stream_answer

    return stream_answer(*args)
