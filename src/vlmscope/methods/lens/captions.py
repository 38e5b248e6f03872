"""Caption corpora for the contextual lens: a text file (one caption a line), a CSV column or
JSONL (a field per line, or a bare JSON string). Read as a stream, never all at once."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from ...errors import VlmscopeError

FORMATS = (".txt", ".csv", ".jsonl")


def iter_captions(path: str | Path, column: str = "caption") -> Iterator[str]:
    """Non-empty captions of `path`, whitespace collapsed to single spaces (one caption a line)."""
    path = Path(path)
    if not path.is_file():
        raise VlmscopeError(f"caption file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise VlmscopeError(
            f"caption file {path.name!r}: unknown format {suffix or '(none)'}; accepted: {', '.join(FORMATS)}"
        )
    with open(path, newline="", encoding="utf-8") as f:
        texts: Iterable[str | None]
        if suffix == ".csv":
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise VlmscopeError(f"{path.name}: no column {column!r}; columns: {', '.join(reader.fieldnames or [])}")
            texts = (row[column] for row in reader)
        elif suffix == ".jsonl":
            texts = (_json_text(line, column, path.name, n) for n, line in enumerate(f, 1) if line.strip())
        else:
            texts = iter(f)
        for text in texts:
            text = " ".join(str(text or "").split())
            if text:
                yield text


def _json_text(line: str, column: str, name: str, n: int) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise VlmscopeError(f"{name} line {n}: not JSON ({e.msg})") from e
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict) or column not in obj:
        raise VlmscopeError(f"{name} line {n}: no field {column!r} (give a JSON object with it, or a JSON string)")
    return obj[column]
