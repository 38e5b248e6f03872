"""Ctrl-C at chosen moments: the `vlmscope` program run in a child process that sends itself
SIGINT when a named function is entered or has returned (its n-th call), so every test signals at
the moment it names instead of at whatever moment a timer lands on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

DRIVER = r"""
import atexit, importlib, json, os, signal, sys, time

def interrupt():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs here (or, once SIGINT is ignored, nothing happens)

for target, when, nth in json.loads(os.environ["VLMSCOPE_TEST_INTERRUPTS"]):
    if target == "atexit":  # during interpreter shutdown, after the program returned
        atexit.register(lambda: (interrupt(), time.sleep(0.5)))
        continue
    module, _, attr = target.partition(":")
    owner = importlib.import_module(module)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    real, calls = getattr(owner, name), [0]

    def patched(*a, _real=real, _when=when, _nth=nth, _calls=calls, **k):
        _calls[0] += 1
        hit = _calls[0] == _nth
        if hit and _when == "enter":
            interrupt()
        out = _real(*a, **k)
        if hit and _when == "return":
            interrupt()
        return out

    setattr(owner, name, patched)

import vlmscope.cli
sys.argv = ["vlmscope", *sys.argv[1:]]
sys.exit(vlmscope.cli.entry())
"""


def run_interrupted(args: list[str], moments: list[tuple[str, str, int]], cwd=None) -> subprocess.CompletedProcess:
    """`vlmscope ARGS` with SIGINT sent at each moment: ("module:function", "enter" | "return", n)
    for the n-th call, or ("atexit", "", 0) for interpreter shutdown."""
    env = {**os.environ, "VLMSCOPE_TEST_INTERRUPTS": json.dumps(moments), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
