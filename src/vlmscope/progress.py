"""One progress bar for every long job: rate and ETA on a terminal, silent elsewhere.

Library code wraps its loops in `progress(...)`; whether bars show is decided once, by the
command line (`--no-progress`) or by `quiet()`, and by whether stderr is a terminal, so a
log file or a notebook cell piping output never fills with carriage returns.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_enabled: contextvars.ContextVar[bool] = contextvars.ContextVar("vlmscope_progress", default=True)


def set_enabled(enabled: bool) -> None:
    """Turn bars on or off for the rest of this context (the CLI calls it for --no-progress)."""
    _enabled.set(enabled)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No bars inside this block (nested jobs, tests)."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


def showing() -> bool:
    """Bars show only when enabled and stderr is an interactive terminal."""
    return _enabled.get() and sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str, unit: str = "it") -> Any:
    """A tqdm bar (rate, ETA) over `iterable`, or a disabled one that costs nothing.

    Without an iterable the bar is updated by hand: `bar.update(n)`; use it as a context manager.
    """
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not showing(),
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
    )
