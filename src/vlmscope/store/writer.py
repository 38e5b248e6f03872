"""Writing parts: rows are appended to a part's temporary file, which is renamed into place only
once complete and synced, so a process killed at any moment leaves finished parts intact.

The writer runs on its own thread behind a bounded queue: compression and disk I/O overlap the
model, and when the disk falls behind the model waits instead of memory growing.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from pathlib import Path

import h5py
import numpy as np

from .layout import FORMAT, VERSION, Failure, Record, part_path, temp_path

COMPRESSIONS = ("gzip", "lzf", "none")
_CHUNK_BYTES = 1 << 20
# Space a part keeps free for its own closing. HDF5 cannot close a file whose last flush fails
# (it leaves the library in a state that can crash the process at exit), so a part stops with a
# clean "no space left" while closing still fits; a full disk then costs only the part in progress.
RESERVE_BYTES = 4 << 20
_STR = h5py.string_dtype("utf-8")


def _filters(compression: str) -> dict:
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    return {}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartWriter:
    """One part: rows append to ``.part-NNNNNN.h5.tmp``; `commit` syncs and renames it."""

    def __init__(
        self,
        out: Path,
        part: int,
        first: int,
        stop: int,
        run_json: str,
        compression: str = "gzip",
        attrs: dict | None = None,
    ):
        self.tmp, self.final = temp_path(out, part), part_path(out, part)
        self.filters = _filters(compression)
        self._check_space(0)
        self.file = h5py.File(self.tmp, "w", rdcc_nbytes=0)  # no dirty chunks held: see abort()
        self.file.attrs.update(
            {"format": FORMAT, "version": VERSION, "part": part, "first_row": first, "stop_row": stop, **(attrs or {})}
        )
        self.file.create_dataset("run", data=run_json, dtype=_STR)
        self.rows = 0
        self.schema: tuple | None = None
        self.failures: list[Failure] = []
        # rows waiting for a whole chunk: each chunk is compressed once, when full (appending a
        # batch into a half-full compressed chunk would decompress and recompress it every time)
        self._pending: dict[str, list[np.ndarray]] = {}
        self._datasets: dict[str, h5py.Dataset] = {}  # h5py's lookup by path costs more than the write
        self._pending_rows: dict[str, int] = {}
        self._ragged_end: dict[str, int] = {}

    def append(self, records: list[Record]) -> None:
        if not records:
            return
        first = records[0]
        schema = (tuple(first.fields), tuple(first.arrays), tuple(first.ragged))
        self.schema = self.schema or schema
        for r in records:
            if (tuple(r.fields), tuple(r.arrays), tuple(r.ragged)) != self.schema:
                raise ValueError(f"row {r.index} has different columns than the rows before it")
        self._append("samples/index", np.array([r.index for r in records], dtype=np.int64))
        self._append("samples/sample_id", np.array([r.sample_id for r in records], dtype=object))
        for name in first.fields:
            self._append(f"samples/{name}", _column([r.fields[name] for r in records]))
        for name in first.arrays:
            self._append(f"features/{name}", np.stack([r.arrays[name] for r in records]))
        for name in first.ragged:
            parts = [r.ragged[name] for r in records]
            if name not in self._ragged_end:
                group = self.file.require_group(f"features/{name}")
                group.attrs["ragged"] = True
                self._append(f"features/{name}/offsets", np.zeros(1, dtype=np.int64))
                self._ragged_end[name] = 0
            offsets = self._ragged_end[name] + np.cumsum([len(p) for p in parts], dtype=np.int64)
            self._ragged_end[name] = int(offsets[-1])
            self._append(f"features/{name}/offsets", offsets)
            self._append(f"features/{name}/values", np.concatenate(parts))
        self.rows += len(records)

    def fail(self, failure: Failure) -> None:
        self.failures.append(failure)

    def _append(self, path: str, data: np.ndarray) -> None:
        """Queue rows for dataset `path` (created now, typed by its first rows); whole chunks are
        written as soon as they fill, the rest at `commit`."""
        ds = self._datasets.get(path)
        if ds is None:
            strings = data.dtype == object
            row_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
            rows = 1024 if strings else max(1, min(4096, _CHUNK_BYTES // row_bytes))
            kw = {k: v for k, v in self.filters.items() if not (strings and k == "shuffle")}
            ds = self._datasets[path] = self.file.create_dataset(
                path,
                shape=(0, *data.shape[1:]),
                maxshape=(None, *data.shape[1:]),
                dtype=_STR if strings else data.dtype,
                chunks=(rows, *data.shape[1:]),
                **kw,
            )
            self._pending[path], self._pending_rows[path] = [], 0
        if data.dtype != object and data.dtype != ds.dtype:
            data = data.astype(ds.dtype)  # as h5py would convert it on writing
        self._pending[path].append(data)
        self._pending_rows[path] += len(data)
        chunk = ds.chunks[0]
        if self._pending_rows[path] >= chunk:
            self._flush(path, whole_chunks=True)

    def _flush(self, path: str, whole_chunks: bool = False) -> None:
        pending = self._pending[path]
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else np.concatenate(pending)
        ds = self._datasets[path]
        take = len(data) - len(data) % ds.chunks[0] if whole_chunks else len(data)
        if take:
            self._check_space(data[:take].nbytes if data.dtype != object else 0)
            n = ds.shape[0]
            ds.resize(n + take, axis=0)
            ds[n:] = data[:take]
        rest = data[take:]
        self._pending[path] = [rest] if len(rest) else []
        self._pending_rows[path] = len(rest)

    def _check_space(self, nbytes: int) -> None:
        """Raise ENOSPC before a write that would leave less than `RESERVE_BYTES` free."""
        st = os.statvfs(self.tmp.parent)
        if st.f_bavail * st.f_frsize < nbytes + RESERVE_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.tmp))

    def commit(self) -> Path:
        """Write the failures, close, sync, and rename into place: only now does the part exist."""
        for name in ("index", "sample_id"):
            if f"samples/{name}" not in self._datasets:
                self._append(f"samples/{name}", np.zeros(0, dtype=np.int64 if name == "index" else object))
        for path in self._pending:
            self._flush(path)
        fails = self.failures
        self.file.create_dataset("failures/index", data=np.array([f.index for f in fails], dtype=np.int64))
        for name in ("sample_id", "stage", "reason"):
            self.file.create_dataset(
                f"failures/{name}", data=np.array([getattr(f, name) for f in fails], dtype=object), dtype=_STR
            )
        self.file.attrs["rows"] = self.rows
        self.file.close()
        _fsync(self.tmp)
        os.replace(self.tmp, self.final)
        _fsync(self.final.parent)
        return self.final

    def abort(self) -> None:
        """Discard the part and remove its temporary file. The file is emptied before it is
        closed: closing flushes what HDF5 still holds (its metadata), and on a full disk the
        space the part took is what lets that flush succeed. A part whose close fails anyway is
        kept referenced, so that HDF5 does not retry (and fail) inside the garbage collector."""
        try:
            if self.file.id.valid:
                os.ftruncate(self.file.id.get_vfd_handle(), 0)
                self.file.close()
        except Exception:
            _UNCLOSABLE.append(self)
        finally:
            self.tmp.unlink(missing_ok=True)


_UNCLOSABLE: list[PartWriter] = []


def _column(values: list) -> np.ndarray:
    if all(isinstance(v, (bool, int, np.integer)) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, (int, float, np.number)) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array([str(v) for v in values], dtype=object)


class StoreWriter:
    """Parts written on a background thread, in the order the messages arrive."""

    def __init__(
        self, out: str | Path, run_json: str, compression: str = "gzip", queue_size: int = 8, attrs: dict | None = None
    ):
        """`attrs` are stamped on every part (who wrote it: process, batch size, device)."""
        self.out, self.run_json, self.compression, self.attrs = Path(out), run_json, compression, attrs or {}
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self.committed: list[int] = []
        self._open: dict[int, PartWriter] = {}
        self._thread = threading.Thread(target=self._run, name="vlmscope-store-writer", daemon=True)
        self._thread.start()

    def begin(self, part: int, first: int, stop: int) -> None:
        self._put(("begin", part, (first, stop)))

    def rows(self, part: int, records: list[Record]) -> None:
        self._put(("rows", part, records))

    def fail(self, part: int, failure: Failure) -> None:
        self._put(("fail", part, failure))

    def commit(self, part: int) -> None:
        self._put(("commit", part, None))

    def close(self) -> None:
        """Wait for every queued write; a part not committed is discarded (it will be redone)."""
        self._put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _put(self, msg) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(msg, timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (msg := self.queue.get()) is not None:
                kind, part, payload = msg
                if kind == "begin":
                    first, stop = payload
                    self._open[part] = PartWriter(
                        self.out, part, first, stop, self.run_json, self.compression, self.attrs
                    )
                elif kind == "rows":
                    self._open[part].append(payload)
                elif kind == "fail":
                    self._open[part].fail(payload)
                else:
                    self._open[part].commit()  # a commit that fails is aborted below with the rest
                    del self._open[part]
                    self.committed.append(part)
        except BaseException as e:  # handed to the main thread at its next put
            self.error = e
        finally:
            for w in self._open.values():
                w.abort()
            self._open.clear()
