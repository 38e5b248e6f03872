"""The output directory of a run: refused when it holds another run, continued with resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import VlmscopeError
from ..files import write_text
from .layout import FAILURES_FILE, FORMAT, RUN_FILE, finished_parts
from .lock import LOCK_FILE

# files a run leaves before its run.json exists (the lock, a run.json or part not yet renamed)
_LEFTOVERS = re.compile(rf"{re.escape(LOCK_FILE)}|\.{re.escape(RUN_FILE)}\.\d+\.tmp|\.part-\d{{6}}\.h5\.tmp")
FINGERPRINT = "source_rows"  # the key of the run that holds the source's row fingerprint


def check_directory(out: str | Path, run: dict | None, resume: bool) -> dict | None:
    """Refuse `out` if it holds files of another run (or of this one, without `resume`).

    Returns the stored run.json when resuming, None for a fresh directory. With `run` None only
    the directory is checked (before a model is loaded), not the settings.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VlmscopeError(f"output {str(out)!r} is a file; give a directory")
    if not out.is_dir() or all(_LEFTOVERS.fullmatch(p.name) for p in out.iterdir()):
        return None  # new, empty, or only what a run killed before writing run.json leaves
    meta_path = out / RUN_FILE
    if not meta_path.is_file():
        raise VlmscopeError(
            f"output directory {str(out)!r} is not empty and holds no vlmscope store; choose an empty or new directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise VlmscopeError(f"cannot read {str(meta_path)!r}: {e}") from None
    if meta.get("format") != FORMAT:
        raise VlmscopeError(f"{str(meta_path)!r} is not a vlmscope store (format {meta.get('format')!r})")
    done = len(finished_parts(out))
    if not resume:
        raise VlmscopeError(
            f"output directory {str(out)!r} already holds a run ({meta['run'].get('preset')}, "
            f"{done} parts finished); pass --resume to continue it, or choose another directory"
        )
    if run:
        run = _check_fingerprint(out, meta["run"], run)
    differ = sorted(k for k in set(meta["run"]) | set(run) if meta["run"].get(k) != run.get(k)) if run else []
    if run and differ:  # differ is empty without run
        got = ", ".join(f"{k}={meta['run'].get(k)!r} (now {run.get(k)!r})" for k in differ)
        raise VlmscopeError(
            f"cannot resume {str(out)!r}: it was started with {got}; use the same settings or another directory"
        )
    return meta


def _check_fingerprint(out: Path, stored: dict, run: dict) -> dict:
    """Refuse a resume over a source whose rows changed (shuffled, edited, grown or shrunk): the
    finished parts hold the old rows, the new parts would hold the new ones. Returns `run` to
    compare the rest with (without the fingerprint for a store written before fingerprints)."""
    if FINGERPRINT not in stored:
        return {k: v for k, v in run.items() if k != FINGERPRINT}
    old, new = stored[FINGERPRINT], run.get(FINGERPRINT)
    if new is not None and old != new and stored.get("source") == run.get("source"):
        raise VlmscopeError(
            f"cannot resume {str(out)!r}: the rows of source {run['source'].get('path')!r} changed since the run "
            f"started ({old['rows']} rows, sha256 {old['sha256'][:12]}; now {new['rows']} rows, sha256 "
            f"{new['sha256'][:12]}): resuming would mix two datasets; restore the source or use another directory"
        )
    return run


def write_run(out: str | Path, meta: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RUN_FILE, json.dumps(meta, indent=2, sort_keys=True))


def write_failures(out: str | Path, failures: list[dict]) -> Path:
    """failures.jsonl, one object per failed row, in source order (rewritten whole, atomically)."""
    path = Path(out) / FAILURES_FILE
    write_text(path, "".join(json.dumps(f) + "\n" for f in failures))
    return path
