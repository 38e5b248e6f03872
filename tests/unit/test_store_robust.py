"""A store meets damage and company: a truncated or corrupted part, a run killed before its
run.json existed, a changed source on resume, a second process on the same directory."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from test_store import RUN, _write_store

import vlmscope.store
from vlmscope import VlmscopeError
from vlmscope.store.directory import FINGERPRINT, check_directory, write_run
from vlmscope.store.layout import FORMAT, finished_parts, part_path
from vlmscope.store.lock import StoreLock, check_free
from vlmscope.store.verify import check_part, set_aside, verify


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_first_chunk(path, name="features/vt/llm.layers.1"):
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes(255 - b for b in range(min(info.size, 64))))


def test_truncated_part_is_named_and_the_rest_reads(tmp_path):
    _write_store(tmp_path)
    with vlmscope.store.open(tmp_path) as whole:
        expected = whole["vt/llm.layers.1"].read(0, 3)  # rows of part 0
    _truncate(part_path(tmp_path, 1))
    with vlmscope.store.open(tmp_path) as store:
        info = store.info()
        assert list(info["damaged"]) == ["part-000001.h5"] and not info["complete"]
        assert len(store) == 3 and info["parts"] == 1
        np.testing.assert_array_equal(store["vt/llm.layers.1"].read(), expected)
    assert check_part(part_path(tmp_path, 0)) is None


def test_verify_reads_every_chunk(tmp_path):
    _write_store(tmp_path)
    assert verify(tmp_path) == {"part-000000.h5": None, "part-000001.h5": None}
    _corrupt_first_chunk(part_path(tmp_path, 0))
    assert check_part(part_path(tmp_path, 0)) is None  # the structure is intact ...
    found = verify(tmp_path)
    assert found["part-000000.h5"] and found["part-000001.h5"] is None  # ... but a full read fails
    moved = set_aside(part_path(tmp_path, 0))
    assert moved.name == "part-000000.h5.damaged" and list(finished_parts(tmp_path)) == [1]


def test_verify_command(tmp_path, capsys):
    from vlmscope.cli import main

    _write_store(tmp_path)
    assert main(["store", "verify", str(tmp_path)]) == 0
    assert "2 parts checked, 0 damaged" in capsys.readouterr().out
    _truncate(part_path(tmp_path, 0))
    assert main(["store", "verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "part-000000.h5  damaged: " in out and "part-000001.h5  ok" in out
    assert main(["store", "info", str(tmp_path)]) == 0
    assert "damaged  part-000000.h5: " in capsys.readouterr().out
    assert main(["store", "verify", str(tmp_path / "nope")]) == 2


def test_a_run_killed_before_run_json_leaves_a_fresh_directory(tmp_path):
    (tmp_path / ".run.json.4242.tmp").write_text('{"format": "vlmscope.store"')  # killed mid-write
    (tmp_path / ".lock").write_text("4242\n")
    assert check_directory(tmp_path, RUN, resume=True) is None
    assert check_directory(tmp_path, RUN, resume=False) is None
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(VlmscopeError, match="holds no vlmscope store"):
        check_directory(tmp_path, RUN, resume=True)


def test_resume_refuses_a_changed_source(tmp_path):
    source = {"kind": "csv", "path": "/data/q.csv"}
    old = {**RUN, "source": source, FINGERPRINT: {"rows": 7, "sha256": "a" * 64}}
    write_run(tmp_path, {"format": FORMAT, "version": 1, "run": old})
    assert check_directory(tmp_path, old, resume=True)["run"] == old
    shuffled = {**old, FINGERPRINT: {"rows": 7, "sha256": "b" * 64}}
    with pytest.raises(
        VlmscopeError,
        match=r"rows of source '/data/q.csv' changed .*7 rows, sha256 aaaaaaaaaaaa; "
        r"now 7 rows, sha256 bbbbbbbbbbbb",
    ):
        check_directory(tmp_path, shuffled, resume=True)
    legacy = {k: v for k, v in old.items() if k != FINGERPRINT}  # a store written before fingerprints
    write_run(tmp_path, {"format": FORMAT, "version": 1, "run": legacy})
    assert check_directory(tmp_path, shuffled, resume=True)["run"] == legacy


HOLDER = """
import sys
from vlmscope.store.lock import StoreLock
lock = StoreLock(sys.argv[1]).exclusive().shared()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_process_is_refused_while_a_run_holds_the_store(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(VlmscopeError, match=rf"is in use: process {holder.pid} is extracting into it") as err:
            StoreLock(tmp_path).exclusive()
        assert "\n" not in str(err.value)
        with pytest.raises(VlmscopeError, match="is in use"):
            check_free(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    check_free(tmp_path)  # released when its holder ends
    StoreLock(tmp_path).exclusive().release()
