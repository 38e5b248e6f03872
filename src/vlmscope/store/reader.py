"""Reading a store: every finished part (of every process) presented as one dataset, in source
order. Nothing is loaded until asked for, so a store larger than memory reads row by row."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import VlmscopeError
from .layout import FAILURES_FILE, FORMAT, RUN_FILE, finished_parts
from .verify import check_part


class Column:
    """One feature column across parts. ``col[i]`` is row i: [*shape] for a fixed column,
    [n_i, *shape] for a ragged one. ``col.read(start, stop)`` reads a range of rows: an array
    for a fixed column, (values, offsets) for a ragged one."""

    def __init__(self, store: Store, name: str, ragged: bool, shape: tuple, dtype: np.dtype):
        self.store, self.name, self.ragged, self.shape, self.dtype = store, name, ragged, shape, dtype

    def __len__(self) -> int:
        return len(self.store)

    def __repr__(self) -> str:
        kind = "ragged [n_i, " if self.ragged else "fixed ["
        return f"Column({self.name!r}, {kind}{', '.join(map(str, self.shape))}], {self.dtype})"

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range: the store has {len(self)} rows")
        part, j = self.store._locate(i % len(self))
        f = self.store._file(part)
        if not self.ragged:
            return f[f"features/{self.name}"][j]
        a, b = f[f"features/{self.name}/offsets"][j : j + 2]
        return f[f"features/{self.name}/values"][a:b]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def read(self, start: int = 0, stop: int | None = None):
        stop = len(self) if stop is None else min(stop, len(self))
        pieces = []
        for part, a, b in self.store._spans(start, stop):
            f = self.store._file(part)
            if not self.ragged:
                pieces.append(f[f"features/{self.name}"][a:b])
            else:
                off = f[f"features/{self.name}/offsets"][a : b + 1]
                pieces.append((f[f"features/{self.name}/values"][off[0] : off[-1]], off - off[0]))
        if not self.ragged:
            return np.concatenate(pieces) if pieces else np.zeros((0, *self.shape), self.dtype)
        if not pieces:
            return np.zeros((0, *self.shape), self.dtype), np.zeros(1, np.int64)
        values = np.concatenate([v for v, _ in pieces])
        offsets, base = [np.zeros(1, np.int64)], 0
        for v, off in pieces:
            offsets.append(off[1:] + base)
            base += len(v)
        return values, np.concatenate(offsets)


class Store:
    """A feature store directory opened for reading (see `vlmscope.store.layout`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        run = self.path / RUN_FILE
        if not run.is_file():
            raise VlmscopeError(f"not a vlmscope store: {str(self.path)!r} has no {RUN_FILE}")
        try:
            self.meta: dict = json.loads(run.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VlmscopeError(f"cannot read {str(run)!r}: {e}") from None
        if self.meta.get("format") != FORMAT:
            raise VlmscopeError(f"not a vlmscope store: {str(run)!r} has format {self.meta.get('format')!r}")
        self.parts = finished_parts(self.path)
        self.damaged: dict[str, str] = {}  # part file -> why it cannot be read; its rows are missing
        for p, file in list(self.parts.items()):
            reason = check_part(file)
            if reason:
                self.damaged[file.name] = reason
                del self.parts[p]
        self._files: dict[int, h5py.File] = {}
        self._rows = {p: int(self._file(p).attrs["rows"]) for p in self.parts}
        self._order = list(self.parts)
        self._starts = np.cumsum([0] + [self._rows[p] for p in self._order])
        self.columns = self._columns()

    # ---- parts ------------------------------------------------------------------------------
    def _file(self, part: int) -> h5py.File:
        if part not in self._files:
            self._files[part] = h5py.File(self.parts[part], "r")
        return self._files[part]

    def _locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._order[k], i - int(self._starts[k])

    def _spans(self, start: int, stop: int):
        """(part, first, stop) row ranges inside parts that cover global rows [start, stop)."""
        for k, part in enumerate(self._order):
            lo, hi = int(self._starts[k]), int(self._starts[k + 1])
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                yield part, a - lo, b - lo

    def _columns(self) -> dict[str, Column]:
        out: dict[str, Column] = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and obj.attrs.get("ragged"):
                v = obj["values"]
                out.setdefault(name, Column(self, name, True, v.shape[1:], v.dtype))
            elif isinstance(obj, h5py.Dataset) and not name.endswith(("/values", "/offsets")):
                out.setdefault(name, Column(self, name, False, obj.shape[1:], obj.dtype))

        for p in self._order:
            if self._rows[p] and "features" in self._file(p):
                self._file(p)["features"].visititems(visit)
        return dict(sorted(out.items()))

    # ---- public -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, name: str) -> Column:
        if name not in self.columns:
            raise VlmscopeError(f"no column {name!r} in {str(self.path)!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    @property
    def sample_columns(self) -> list[str]:
        names: list[str] = []
        for p in self._order:
            names += [n for n in self._file(p)["samples"] if n not in names]
        return names

    def samples(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """The sample table for rows [start, stop): strings come back as str."""
        stop = len(self) if stop is None else min(stop, len(self))
        out: dict[str, list] = {n: [] for n in self.sample_columns}
        for part, a, b in self._spans(start, stop):
            g = self._file(part)["samples"]
            for n in out:
                ds = g[n]
                out[n].append(ds.asstr()[a:b] if h5py.check_string_dtype(ds.dtype) else ds[a:b])
        return {n: np.concatenate(v) if v else np.zeros(0) for n, v in out.items()}

    def failures(self) -> list[dict]:
        """Rows that produced nothing, from every finished part, in source order."""
        out = []
        for p in self._order:
            g = self._file(p)["failures"]
            cols = {
                n: (g[n].asstr()[:] if n != "index" else g[n][:]) for n in ("index", "sample_id", "stage", "reason")
            }
            out += [
                {"index": int(i), "sample_id": s, "stage": st, "reason": r}
                for i, s, st, r in zip(cols["index"], cols["sample_id"], cols["stage"], cols["reason"])
            ]
        return sorted(out, key=lambda f: f["index"])

    @property
    def expected_parts(self) -> int:
        run = self.meta["run"]
        return -(-run["total_rows"] // run["checkpoint_every"])

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.expected_parts

    def info(self) -> dict:
        """What `vlmscope store info` prints."""
        fails = self.failures()
        by_stage: dict[str, int] = {}
        for f in fails:
            by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
        return {
            "path": str(self.path),
            "rows": len(self),
            "failures": len(fails),
            "failures_by_stage": by_stage,
            "parts": len(self.parts),
            "expected_parts": self.expected_parts,
            "damaged": dict(self.damaged),
            "complete": self.complete,
            "model": self.meta.get("model", {}),
            "run": self.meta.get("run", {}),
            "packages": self.meta.get("packages", {}),
            "failures_file": str(self.path / FAILURES_FILE) if (self.path / FAILURES_FILE).is_file() else None,
            "columns": {
                n: {"kind": "ragged" if c.ragged else "fixed", "shape": list(c.shape), "dtype": str(c.dtype)}
                for n, c in self.columns.items()
            },
        }


def open(path: str | Path) -> Store:  # noqa: A001 - the natural name: vlmscope.store.open(path)
    """Open a store directory; every finished part reads as one dataset."""
    return Store(path)
