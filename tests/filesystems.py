"""Real full and read-only file systems for the tests: a child process in its own user and mount
namespace (``unshare -rm``, no privileges needed) mounts small tmpfs folders and runs vlmscope
commands in-process there, reporting what each gave as JSON."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PRELUDE = r"""
import contextlib, io, json, subprocess, sys
from pathlib import Path

def mount(path, size, *options):
    Path(path).mkdir(parents=True, exist_ok=True)
    opts = ",".join([f"size={size}", *options])
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "none", str(path)], check=True)

def remount(path, *options):
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(path)], check=True)

def files(path):
    path = Path(path)
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.is_dir() else []

def cli(argv):
    from vlmscope.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse refusing the flags
            code = e.code
    return {"code": code, "err": err.getvalue().strip().splitlines()}

RESULTS = {}
"""


@functools.cache
def namespaces_work() -> bool:
    """Can this machine mount a tmpfs in a user namespace (unshare -rm)?"""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as d:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k none {d}"], capture_output=True, timeout=30
        )
    return probe.returncode == 0


def run_in_namespace(body: str, folder: Path) -> dict:
    """Run `body` (Python, after PRELUDE; it fills RESULTS) in a fresh namespace; RESULTS back."""
    script = folder / "namespace_script.py"
    script.write_text(PRELUDE + body + "\nprint('RESULTS=' + json.dumps(RESULTS))\n")
    done = subprocess.run(["unshare", "-rm", sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULTS=")), None)
    assert done.returncode == 0 and line, f"namespace script failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(line[len("RESULTS=") :])
