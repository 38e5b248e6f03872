"""Exporting a store: one folder of .npy files + manifest.json per sample (the layout of the
single-image extractors), or one Parquet table. Both read a few rows at a time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import VlmscopeError
from ..files import check_writable, replacing
from .reader import Store

FORMATS = ("npy", "parquet")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ROWS_PER_READ = 64


def _safe(name: str) -> str:
    """A file-name component that cannot leave its folder."""
    name = _SAFE.sub("_", name).lstrip(".")
    return name[:80] or "_"


def _rows(store: Store):
    """(sample fields, {column: array}) for every row, reading `_ROWS_PER_READ` rows at a time."""
    for start in range(0, len(store), _ROWS_PER_READ):
        stop = min(start + _ROWS_PER_READ, len(store))
        table = store.samples(start, stop)
        cols = {n: c.read(start, stop) for n, c in store.columns.items()}
        for k in range(stop - start):
            fields = {n: v[k].item() if hasattr(v[k], "item") else v[k] for n, v in table.items()}
            arrays = {}
            for n, c in store.columns.items():
                if c.ragged:
                    values, off = cols[n]
                    arrays[n] = values[off[k] : off[k + 1]]
                else:
                    arrays[n] = cols[n][k]
            yield fields, arrays


def to_npy(store: Store, out: str | Path) -> Path:
    """``out/<index>_<sample id>/<column>.npy`` + a manifest.json per sample, and ``out/manifest.json``,
    written under a temporary name: `out` appears (or replaces an earlier export) only when complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        tmp.mkdir()
        _write_npy(store, tmp)
    return out


def _write_npy(store: Store, out: Path) -> None:
    listing = []
    for fields, arrays in _rows(store):
        folder = out / f"{fields['index']:06d}_{_safe(str(fields['sample_id']))}"
        entries = {}
        for name, arr in arrays.items():
            parts = [_safe(p) for p in name.split("/")]
            rel = Path(*parts[:-1], parts[-1] + ".npy")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            np.save(folder / rel, arr)
            entries[name] = {"path": rel.as_posix(), "shape": list(arr.shape), "dtype": str(arr.dtype)}
        manifest = {**fields, "arrays": entries}
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
        listing.append({"index": fields["index"], "sample_id": fields["sample_id"], "folder": folder.name})
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "source": str(store.path),
                "model": store.meta.get("model"),
                "run": store.meta.get("run"),
                "samples": listing,
            },
            indent=2,
        )
    )


def _arrow_array(pa, arr: np.ndarray, offsets: np.ndarray | None = None):
    """Fixed-size lists for each trailing axis; an outer variable list for ragged columns."""
    flat = pa.array(arr.reshape(-1))
    for size in reversed(arr.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, int(size))
    if offsets is not None:
        return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), flat)
    return flat


def to_parquet(store: Store, out: str | Path) -> Path:
    """One Parquet file, one row per sample: sample fields, then every feature column."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise VlmscopeError("Parquet export needs pyarrow: pip install 'vlmscope[export]'") from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as tmp:
        _write_parquet(store, tmp, pa, pq)
    return out


def _write_parquet(store: Store, out: Path, pa, pq) -> None:
    writer = None
    try:
        for start in range(0, len(store), _ROWS_PER_READ):
            stop = min(start + _ROWS_PER_READ, len(store))
            columns = {n: pa.array(v.tolist()) for n, v in store.samples(start, stop).items()}
            for n, c in store.columns.items():
                if c.ragged:
                    values, off = c.read(start, stop)
                    columns[n] = _arrow_array(pa, values, off)
                else:
                    columns[n] = _arrow_array(pa, c.read(start, stop))
            table = pa.table(columns)
            table = table.replace_schema_metadata({"vlmscope": json.dumps(store.meta)})
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise VlmscopeError(f"nothing to export: {str(store.path)!r} has no rows")


def _check_destination(out: Path, fmt: str) -> None:
    """An export replaces an earlier export of the same format, and nothing else."""
    if not out.exists():
        return
    if (fmt == "npy") != out.is_dir():
        kind = "a folder" if out.is_dir() else "a file"
        raise VlmscopeError(f"export destination {str(out)!r} is {kind}; give a new path or an earlier {fmt} export")
    if fmt == "npy" and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise VlmscopeError(
            f"export destination {str(out)!r} holds files that are not an earlier export; give a new or empty folder"
        )


def export(store: Store, fmt: str, out: str | Path) -> Path:
    """Write `store` to `out` as `fmt`; a destination that cannot be written is refused before any
    row is read, and a failure on the way (a full disk) leaves no partial export behind."""
    if fmt not in FORMATS:
        raise VlmscopeError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    _check_destination(Path(out), fmt)
    check_writable(out, "export")
    return (to_npy if fmt == "npy" else to_parquet)(store, out)
