"""Rows in, model-ready batches out, on a background thread: images are opened and the processor
runs while the model works on the previous batch. A row whose image or input is bad becomes a
failure here and never reaches the model.

Batches never cross a part boundary, so a part is the same set of batches however the run was
split or resumed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..data.sources import Row
from ..errors import VlmscopeError
from ..inputs import Batch, Example
from ..store.layout import Failure


@dataclass
class PartStart:
    part: int
    first: int
    stop: int


@dataclass
class PartEnd:
    part: int


@dataclass
class Work:
    """Rows of one part ready for the model (``batch``, without its images: the pixels are in its
    tensors, and `Batch.select` cuts one row out for a retry), or rows that failed before it."""

    part: int
    rows: list[Row] = field(default_factory=list)
    batch: Batch | None = None
    failures: list[Failure] = field(default_factory=list)


def _example(row: Row, images: list) -> Example:
    return Example(row.question, images=images, id=row.id)


class Loader:
    """Iterate `PartStart`, `Work` and `PartEnd` items for the parts this process owns."""

    def __init__(
        self,
        rows: Iterable[Row],
        parts: set[int],
        part_size: int,
        total: int,
        batch_size: int,
        prepare: Callable[[list[Example]], Batch],
        needs_image: bool,
        depth: int = 2,
        check_length: Callable[[int], str | None] | None = None,
    ):
        """`check_length(tokens)` returns why a prompt of that many tokens cannot run, or None."""
        self.rows, self.parts, self.part_size, self.total = rows, parts, part_size, total
        self.batch_size, self.prepare, self.needs_image = batch_size, prepare, needs_image
        self.check_length = check_length
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vlmscope-loader", daemon=True)

    def __iter__(self) -> Iterator:
        self.thread.start()
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stopping.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                pass

    def _put(self, item) -> None:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self) -> None:
        try:
            self._produce()
            self._put(None)
        except _Stopped:
            pass
        except BaseException as e:  # raised in the consuming thread
            try:
                self._put(e)
            except _Stopped:
                pass

    def _produce(self) -> None:
        current = None
        pending: list[tuple[Row, Example]] = []
        last = max(self.parts, default=-1)
        for row in self.rows:
            part = row.index // self.part_size
            if part > last:
                break
            if part != current:
                if current is not None:
                    self._flush(current, pending)
                    self._put(PartEnd(current))
                current, pending = (part, []) if part in self.parts else (None, [])
                if current is not None:
                    first = part * self.part_size
                    self._put(PartStart(part, first, min(first + self.part_size, self.total)))
            if current is None:
                continue
            loaded = self._load(row)
            if isinstance(loaded, Failure):
                self._put(Work(part, failures=[loaded]))
                continue
            pending.append(loaded)
            if len(pending) == self.batch_size:
                self._flush(part, pending)
                pending = []
        if current is not None:
            self._flush(current, pending)
            self._put(PartEnd(current))

    def _load(self, row: Row):
        if row.error:
            return Failure(row.index, row.id, "source", row.error)
        if self.needs_image and not row.images:
            return Failure(row.index, row.id, "source", f"row {row.index} ({row.id}) has no image")
        try:
            return row, _example(row, row.load_images())
        except VlmscopeError as e:
            return Failure(row.index, row.id, "image", str(e))

    def _flush(self, part: int, pending: list) -> None:
        if not pending:
            return
        rows, examples = [r for r, _ in pending], [e for _, e in pending]
        try:
            batch = self.prepare(examples)
            batch.examples = []  # the pixels are in the batch: the images can go
        except ValueError:  # VlmscopeError, or the processor refusing an image (too small, too thin)
            batch = None
        if batch is not None:
            too_long = self._too_long(batch)
            if not too_long:
                self._put(Work(part, rows, batch))
                return
            for b, reason in too_long.items():  # recorded; the others run as a batch without them
                self._put(Work(part, failures=[Failure(rows[b].index, rows[b].id, "input", reason)]))
            rest = [p for b, p in enumerate(pending) if b not in too_long]
            if rest:
                self._flush(part, rest)
            return
        for row, ex in pending:  # find the rows the processor refuses; the others go on alone
            try:
                one = self.prepare([ex])
                one.examples = []
            except ValueError as e:
                reason = str(e) if isinstance(e, VlmscopeError) else f"{e.__class__.__name__}: {e}"
                self._put(Work(part, failures=[Failure(row.index, row.id, "input", reason)]))
                continue
            too_long_reason = self._too_long(one).get(0)
            if too_long_reason:
                self._put(Work(part, failures=[Failure(row.index, row.id, "input", too_long_reason)]))
                continue
            self._put(Work(part, [row], one))

    def _too_long(self, batch: Batch) -> dict[int, str]:
        """Example -> reason, for the prompts longer than the model's context."""
        if self.check_length is None:
            return {}
        out = {}
        for b, pad in enumerate(batch.pad):
            reason = self.check_length(batch.length - pad)
            if reason:
                out[b] = reason
        return out


class _Stopped(Exception):
    """The consumer went away; the loader thread ends quietly."""
