"""The store writer's thread: the same content as writing in the caller's thread, whole chunks
compressed once, and a process killed with SIGKILL mid-part keeps its finished parts and resumes
to the same store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vlmscope.store.directory import write_run
from vlmscope.store.layout import FORMAT, Failure, Record, finished_parts, temp_path
from vlmscope.store.writer import PartWriter, StoreWriter

RUN = {"preset": {"name": "test"}, "total_rows": 300, "checkpoint_every": 100}


def _record(i: int) -> Record:
    rng = np.random.default_rng(i)
    return Record(
        i,
        f"q{i}",
        fields={"question": f"question {i}", "score": i * 0.5, "n": i},
        # 4096-float rows: 64 rows per 1 MiB chunk, so a 100-row part spans two chunks
        arrays={"qt/llm.layers.1": rng.standard_normal(4096).astype(np.float32)},
        ragged={"vision.merger": rng.standard_normal((i % 7 + 1, 1024)).astype(np.float32)},
    )


def _batches(first: int, stop: int, size: int = 8) -> list[list[Record]]:
    rows = [_record(i) for i in range(first, stop) if i % 13 != 5]  # some rows fail
    return [rows[k : k + size] for k in range(0, len(rows), size)]


def _content(path: Path) -> dict:
    """Every dataset's values and every attribute of a part file."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/attrs"] = dict(f.attrs)

        def visit(name, obj):
            out[f"{name}@attrs"] = dict(obj.attrs)
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        f.visititems(visit)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], dict):
            assert a[k].keys() == b[k].keys(), k
            for name in a[k]:
                np.testing.assert_array_equal(a[k][name], b[k][name], err_msg=f"{k} {name}")
        elif isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _threaded(out: Path, compression: str) -> None:
    write_run(out, {"format": FORMAT, "version": 1, "run": RUN})
    writer = StoreWriter(out, "{}", compression, queue_size=2)
    for part in range(3):
        first, stop = 100 * part, 100 * part + 100
        writer.begin(part, first, stop)
        for batch in _batches(first, stop):
            writer.rows(part, batch)
        for i in range(first, stop):
            if i % 13 == 5:
                writer.fail(part, Failure(i, f"q{i}", "image", "bad"))
        writer.commit(part)
    writer.close()


def _synchronous(out: Path, compression: str) -> None:
    out.mkdir()
    for part in range(3):
        first, stop = 100 * part, 100 * part + 100
        w = PartWriter(out, part, first, stop, "{}", compression)
        for batch in _batches(first, stop):
            w.append(batch)
        for i in range(first, stop):
            if i % 13 == 5:
                w.fail(Failure(i, f"q{i}", "image", "bad"))
        w.commit()


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_threaded_writer_equals_synchronous_writer(tmp_path, compression):
    _threaded(tmp_path / "threaded", compression)
    _synchronous(tmp_path / "sync", compression)
    for part in range(3):
        a = _content(tmp_path / "threaded" / f"part-{part:06d}.h5")
        b = _content(tmp_path / "sync" / f"part-{part:06d}.h5")
        _assert_same(a, b)
    # and both equal the records themselves (an independent reference)
    rows = [r for batch in _batches(100, 200) for r in batch]
    c = _content(tmp_path / "threaded" / "part-000001.h5")
    np.testing.assert_array_equal(c["features/qt/llm.layers.1"], np.stack([r.arrays["qt/llm.layers.1"] for r in rows]))
    values = np.concatenate([r.ragged["vision.merger"] for r in rows])
    np.testing.assert_array_equal(c["features/vision.merger/values"], values)
    sizes = [len(r.ragged["vision.merger"]) for r in rows]
    np.testing.assert_array_equal(c["features/vision.merger/offsets"], np.concatenate([[0], np.cumsum(sizes)]))
    assert c["samples/n"].dtype == np.int64 and c["samples/n"].tolist() == [r.index for r in rows]
    assert c["failures/index"].tolist() == [i for i in range(100, 200) if i % 13 == 5]


_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_writer_thread import _batches
from vlmscope.store.directory import write_run
from vlmscope.store.layout import FORMAT, finished_parts
from vlmscope.store.writer import StoreWriter
out = Path(sys.argv[1])
parts = [int(p) for p in sys.argv[2].split(",")]
slow = sys.argv[3] == "slow"
if not (out / "run.json").exists():
    write_run(out, {{"format": FORMAT, "version": 1, "run": {{}}}})
writer = StoreWriter(out, "{{}}", "gzip", queue_size=2)
for part in parts:
    writer.begin(part, 100 * part, 100 * part + 100)
    for batch in _batches(100 * part, 100 * part + 100):
        writer.rows(part, batch)
        if slow and part > 0:
            time.sleep(0.05)
    writer.commit(part)
writer.close()
"""


def test_kill_minus_9_keeps_finished_parts_and_resumes(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(_CHILD.format(tests=str(Path(__file__).parent)))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(child), str(killed), "0,1,2", "slow"], env=env)
    deadline = time.time() + 120
    while not (finished_parts(killed) and temp_path(killed, 1).exists()) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(finished_parts(killed)) == [0], "killed while part 1 was being written"
    # resume: the unfinished parts are written again from their first row
    todo = ",".join(str(p) for p in range(3) if p not in finished_parts(killed))
    subprocess.run([sys.executable, str(child), str(killed), todo, "fast"], env=env, check=True)
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, str(child), str(straight), "0,1,2", "fast"], env=env, check=True)
    assert list(finished_parts(killed)) == [0, 1, 2]
    for part in range(3):
        _assert_same(
            _content(killed / f"part-{part:06d}.h5"),
            _content(straight / f"part-{part:06d}.h5"),
        )
