"""One run per store at a time: an advisory lock on ``<store>/.lock``.

The process that claims the directory holds it exclusively while it checks and writes run.json,
then every process of the run holds it shared until it finishes. Another run (a second
``--resume`` into the same directory) cannot take it exclusively and is refused with one line,
instead of both writing the same parts. Readers never lock: a store is readable during a run.
On systems without ``fcntl`` the lock is a no-op.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import VlmscopeError

LOCK_FILE = ".lock"

fcntl: ModuleType | None
try:
    fcntl = importlib.import_module("fcntl")
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None


class StoreLock:
    """``with StoreLock(out).exclusive(): ...``, then `.shared()` for the rest of the run, `.release()`."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILE
        self.fd: int | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self.fd

    def exclusive(self) -> StoreLock:
        """Take the lock alone, or raise VlmscopeError naming the process that holds it."""
        fd = self._open()
        if fcntl is None:
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise VlmscopeError(busy_message(self.out)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def shared(self) -> StoreLock:
        """Hold the lock beside the other processes of the same run (blocks while one holds it alone)."""
        fd = self._open()
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def busy_message(out: Path) -> str:
    try:
        pid = (Path(out) / LOCK_FILE).read_text().strip()
    except OSError:
        pid = ""
    who = f"process {pid}" if pid else "another process"
    return (
        f"store {str(out)!r} is in use: {who} is extracting into it; wait for it to finish "
        f"(then --resume if needed) or choose another directory"
    )


def check_free(out: str | Path) -> None:
    """Refuse early (before a model loads) if a run holds the store; creates nothing."""
    path = Path(out) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise VlmscopeError(busy_message(Path(out))) from None
    finally:
        os.close(fd)
