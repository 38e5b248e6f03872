"""Writing outputs without leaving a mess: destinations checked before any work, files written
under a temporary name and renamed only when complete, and the operating system's errors of a full,
read-only or forbidden destination turned into one line.

A full disk in the middle of a write must not leave a half-written file where a complete one was
(or is expected), nor temporary files behind: `replacing` removes its temporary on any failure.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import VlmscopeError

REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}
_ERRNO = re.compile(r"errno = (\d+)")  # h5py reports the OS error only inside its message
_FILENAME = re.compile(r"filename = '([^']*)'")


def write_failure(e: BaseException) -> str | None:
    """Why writing failed ("no space left on device", "read-only file system", ...), or None when
    `e` is not such an error (h5py's RuntimeError carries the errno in its text)."""
    if not isinstance(e, (OSError, RuntimeError)):
        return None
    code = getattr(e, "errno", None)
    if code is None:
        found = _ERRNO.search(str(e))
        code = int(found.group(1)) if found else None
    return REASONS.get(code) if code is not None else None


def failure_line(e: BaseException) -> str | None:
    """One line for a write that failed (the file, if known, and the reason), None otherwise."""
    reason = write_failure(e)
    if reason is None:
        return None
    name = getattr(e, "filename", None)
    if name is None:
        found = _FILENAME.search(str(e))
        name = found.group(1) if found else None
    return f"cannot write {str(name)!r}: {reason}" if name else f"cannot write the output: {reason}"


def check_writable(path: str | Path, what: str = "output") -> None:
    """Refuse, before any work, a destination that cannot take new files: the folder `path` names
    (or, for a file or a folder not made yet, the nearest folder above it) must be writable and not
    on a read-only file system."""
    target = Path(path).absolute()
    folder = target if target.is_dir() else next((p for p in target.parents if p.is_dir()), None)
    if folder is None:
        return
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise VlmscopeError(f"cannot write {what} {str(path)!r}: {str(folder)!r} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VlmscopeError(f"cannot write {what} {str(path)!r}: permission denied on {str(folder)!r}")


def temporary_name(path: str | Path) -> Path:
    """A hidden sibling of `path` for writing it (one per process: several may finish at once)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path` (a file, or a folder) under; it replaces `path` when
    the block completes and is removed when it fails, so `path` is either the old complete output
    or the new complete one, never half of one."""
    path = Path(path)
    tmp = temporary_name(path)
    remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            remove(path)  # a folder cannot be renamed over a non-empty one
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write a text file whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_text(text)
