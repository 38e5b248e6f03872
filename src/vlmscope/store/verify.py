"""Checking parts: a file truncated or corrupted after its rename (a full disk, a bad copy, a
disk fault) is named instead of failing every read of the store.

`check_part` is structural and cheap (the file opens, the attributes and the row counts agree);
with ``full=True`` every dataset is also read to the end, which finds a damaged chunk anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from .layout import finished_parts

DAMAGED_SUFFIX = ".damaged"


def check_open_part(f: h5py.File, full: bool = False) -> None:
    """Raise ValueError naming the first inconsistency of an open part."""
    for key in ("format", "rows", "first_row", "stop_row"):
        if key not in f.attrs:
            raise ValueError(f"attribute {key!r} missing")
    rows = int(f.attrs["rows"])
    for name in ("samples/index", "samples/sample_id", "failures/index"):
        if name not in f:
            raise ValueError(f"dataset {name!r} missing")
    problems: list[str] = []

    def visit(name, obj):
        if problems or not isinstance(obj, h5py.Dataset):
            return
        if name.startswith(("samples/", "features/")) and not name.endswith(("/values", "/offsets")):
            if obj.shape[0] != rows:
                problems.append(f"{name} has {obj.shape[0]} rows, the part says {rows}")
        if name.endswith("/offsets"):
            values = f[name[: -len("offsets")] + "values"]
            if obj.shape[0] != rows + 1 or (rows and int(obj[-1]) != values.shape[0]):
                problems.append(f"{name} does not match {values.name} ({obj.shape[0]} offsets, {rows} rows)")
        if full and not problems:
            _read_all(obj)

    f.visititems(visit)
    if problems:
        raise ValueError(problems[0])


def _read_all(ds: h5py.Dataset) -> None:
    """Read a dataset chunk by chunk: decompression fails on a damaged chunk."""
    if ds.shape == ():
        ds[()]
        return
    step = max(1, ds.chunks[0] if ds.chunks else ds.shape[0])
    for i in range(0, ds.shape[0], step):
        ds[i : i + step]


def check_part(path: str | Path, full: bool = False) -> str | None:
    """None for a sound part, else the reason it cannot be read (one line)."""
    try:
        with h5py.File(path, "r") as f:
            check_open_part(f, full)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError... for a damaged file
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__
    return None


def verify(out: str | Path, full: bool = True) -> dict[str, str | None]:
    """Part file name -> None (sound) or the reason it is damaged, for every finished part."""
    return {p.name: check_part(p, full) for p in finished_parts(Path(out)).values()}


def set_aside(path: Path) -> Path:
    """Rename a damaged part out of the store (``part-NNNNNN.h5.damaged``) so that its rows are
    redone; the file is kept for inspection, never deleted."""
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}.{k}")
        k += 1
    os.replace(path, target)
    return target
