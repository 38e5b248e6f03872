"""Ctrl-C in the `vlmscope` program: one line and status 130 at any moment, and never a finished
output undone by a late one.

The first SIGINT raises KeyboardInterrupt (cleanup runs, then `cli.main` prints the one line); a
second one during that cleanup prints the line itself and ends the process at once. Once the
output is complete (or the line printed), SIGINT is ignored at the OS level: interpreter shutdown
takes a second or more, and Python resets its own handlers to the default (death by signal) while
it tears down. Only the program installs this; a library caller's own handling is never touched.
"""

from __future__ import annotations

import os
import signal

LINE = "vlmscope: interrupted"
_state = {"installed": False, "interrupted": False}


def install() -> None:
    signal.signal(signal.SIGINT, _handle)
    _state["installed"] = True


def output_complete() -> None:
    """Nothing is left to interrupt: the output is written (or the error or the line printed)."""
    if _state["installed"]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _handle(signum, frame) -> None:
    if _state["interrupted"]:  # a second Ctrl-C before the line was printed: print it, stop now
        os.write(2, (LINE + "\n").encode())  # no lock: the main thread may be inside a print
        os._exit(130)
    _state["interrupted"] = True
    raise KeyboardInterrupt
