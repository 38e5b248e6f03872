"""Generate with the answer streamed token by token, cancellable, capturing attention rows.

The generate runs in a worker thread (under the model's lock: two sessions never run one model
at the same time); its streamer hands each new token to the caller, which yields the text so far
and finally the resolved Answer. Setting `cancel` stops the generate after the current token;
the answer so far is kept, with its rows.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..inputs import Example
from ..limits import ANSWER_TOKENS
from ..methods.answer import Answer

if TYPE_CHECKING:
    from ..scope import Scope

_END = object()


class _Tokens:
    """A transformers streamer: the first `put` is the prompt, each later one a new token."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.queue.put([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        pass


def _stopper(cancel: threading.Event):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return StoppingCriteriaList([Cancelled()])


def stream_answer(
    scope: Scope,
    example: Example,
    capture=None,
    max_new_tokens: int = ANSWER_TOKENS,
    cancel: threading.Event | None = None,
    lock: threading.Lock | None = None,
) -> Iterator[str | Answer]:
    """Yield the answer text after each new token, then the resolved Answer (with `capture`
    taken during the generate). Errors of the generate are raised here."""
    cancel = cancel or threading.Event()
    cancel.clear()
    streamer = _Tokens()
    box: dict[str, object] = {}

    def work() -> None:
        try:
            with lock or contextlib.nullcontext():
                box["answer"] = Answer.resolve(
                    scope,
                    example,
                    max_new_tokens,
                    capture=capture,
                    streamer=streamer,
                    stopping_criteria=_stopper(cancel),
                )
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e
        finally:
            streamer.queue.put(_END)

    thread = threading.Thread(target=work, name="vlmscope-generate", daemon=True)
    thread.start()
    tok = scope.processor.tokenizer
    stops = scope.stop_ids()
    ids: list[int] = []
    try:
        while True:
            item = streamer.queue.get()
            if item is _END:
                break
            ids += [t for t in item if t not in stops]
            yield tok.decode(ids, skip_special_tokens=True)
    finally:
        if thread.is_alive():  # the caller stopped listening: stop the generate too
            cancel.set()
        thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    yield box["answer"]  # type: ignore[misc]
