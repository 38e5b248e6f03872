"""The feature store without a model: parts written and read back as one dataset, crash-safe
renames, the output-directory rules, and the two export formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vlmscope.store
from vlmscope import VlmscopeError
from vlmscope.store.directory import check_directory, write_run
from vlmscope.store.export import export
from vlmscope.store.layout import FORMAT, Failure, Record, finished_parts, part_path, temp_path
from vlmscope.store.writer import PartWriter, StoreWriter

RUN = {"preset": {"name": "test"}, "total_rows": 7, "checkpoint_every": 4}


def _record(i: int) -> Record:
    rng = np.random.default_rng(i)
    return Record(
        i,
        f"q{i}",
        fields={"question": f"question {i}", "score": i * 0.5},
        arrays={"vt/llm.layers.1": rng.standard_normal(8).astype(np.float32)},
        ragged={
            "vision.merger": rng.standard_normal((i + 1, 3)).astype(np.float32),
            "grid_thw": np.array([[1, 2, 2 + i]], dtype=np.int64),
        },
    )


def _write_store(out, compression="gzip"):
    write_run(out, {"format": FORMAT, "version": 1, "run": RUN})
    meta = (out / "run.json").read_text()
    writer = StoreWriter(out, meta, compression)
    writer.begin(0, 0, 4)
    writer.rows(0, [_record(0), _record(1)])
    writer.fail(0, Failure(2, "q2", "image", "image not found: 'x.png'"))
    writer.rows(0, [_record(3)])
    writer.commit(0)
    writer.begin(1, 4, 7)
    writer.rows(1, [_record(4), _record(5), _record(6)])
    writer.commit(1)
    writer.close()
    return [0, 1, 3, 4, 5, 6]


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_parts_read_as_one_dataset(tmp_path, compression):
    rows = _write_store(tmp_path, compression)
    with vlmscope.store.open(tmp_path) as store:
        assert (
            len(store) == 6
            and store.complete
            and sorted(store.columns) == ["grid_thw", "vision.merger", "vt/llm.layers.1"]
        )
        table = store.samples()
        assert table["index"].tolist() == rows and table["sample_id"].tolist() == [f"q{i}" for i in rows]
        assert table["question"][3] == "question 4" and table["score"][5] == 3.0
        vt = store["vt/llm.layers.1"].read()
        assert vt.shape == (6, 8)
        for k, i in enumerate(rows):
            ref = _record(i)
            np.testing.assert_array_equal(vt[k], ref.arrays["vt/llm.layers.1"])
            np.testing.assert_array_equal(store["vision.merger"][k], ref.ragged["vision.merger"])
        values, offsets = store["vision.merger"].read(2, 5)  # spans both parts
        assert offsets.tolist() == [0, 4, 9, 15] and values.shape == (15, 3)
        np.testing.assert_array_equal(values[4:9], _record(4).ragged["vision.merger"])
        assert store["grid_thw"][1].tolist() == [[1, 2, 3]]
        assert store.failures() == [
            {"index": 2, "sample_id": "q2", "stage": "image", "reason": "image not found: 'x.png'"}
        ]
        with pytest.raises(VlmscopeError, match="no column 'nope'"):
            store["nope"]


def test_part_in_progress_is_invisible(tmp_path):
    _write_store(tmp_path)
    part_path(tmp_path, 1).unlink()
    w = PartWriter(tmp_path, 1, 4, 7, "{}")
    w.append([_record(4)])  # a process killed here leaves only the temporary file
    w.file.flush()
    assert temp_path(tmp_path, 1).exists() and list(finished_parts(tmp_path)) == [0]
    with vlmscope.store.open(tmp_path) as store:
        assert len(store) == 3 and not store.complete and store.info()["parts"] == 1
    w.commit()
    assert list(finished_parts(tmp_path)) == [0, 1] and not temp_path(tmp_path, 1).exists()


def test_writer_errors_reach_the_caller_and_discard_the_part(tmp_path):
    write_run(tmp_path, {"format": FORMAT, "run": RUN})
    writer = StoreWriter(tmp_path, "{}")
    writer.begin(0, 0, 4)
    bad = _record(1)
    bad.arrays["extra"] = np.zeros(2)
    writer.rows(0, [_record(0), bad])
    writer.commit(0)
    with pytest.raises(ValueError, match="row 1 has different columns"):
        writer.close()
    assert not finished_parts(tmp_path) and not temp_path(tmp_path, 0).exists()


def test_output_directory_rules(tmp_path):
    assert check_directory(tmp_path / "new", RUN, resume=False) is None
    assert check_directory(tmp_path, RUN, resume=False) is None  # empty
    write_run(tmp_path, {"format": FORMAT, "run": RUN})
    with pytest.raises(VlmscopeError, match="already holds a run .*pass --resume"):
        check_directory(tmp_path, RUN, resume=False)
    assert check_directory(tmp_path, RUN, resume=True)["run"] == RUN
    with pytest.raises(VlmscopeError, match=r"cannot resume .*checkpoint_every=4 \(now 5\)"):
        check_directory(tmp_path, {**RUN, "checkpoint_every": 5}, resume=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(VlmscopeError, match="not empty and holds no vlmscope store"):
        check_directory(other, RUN, resume=True)


def test_export_npy_and_parquet(tmp_path):
    store_dir = tmp_path / "store"
    rows = _write_store(store_dir)
    with vlmscope.store.open(store_dir) as store:
        out = export(store, "npy", tmp_path / "npy")
        top = json.loads((out / "manifest.json").read_text())
        assert [s["index"] for s in top["samples"]] == rows
        folder = out / top["samples"][1]["folder"]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["question"] == "question 1" and manifest["arrays"]["vt/llm.layers.1"]["shape"] == [8]
        np.testing.assert_array_equal(np.load(folder / "vt" / "llm.layers.1.npy"), _record(1).arrays["vt/llm.layers.1"])
        np.testing.assert_array_equal(np.load(folder / "vision.merger.npy"), _record(1).ragged["vision.merger"])

        import pyarrow.parquet as pq

        table = pq.read_table(export(store, "parquet", tmp_path / "x.parquet"))
        assert table.num_rows == 6 and table.column("sample_id").to_pylist()[2] == "q3"
        np.testing.assert_allclose(table.column("vision.merger").to_pylist()[3], _record(4).ragged["vision.merger"])
        np.testing.assert_allclose(table.column("vt/llm.layers.1").to_pylist()[0], _record(0).arrays["vt/llm.layers.1"])
        assert json.loads(table.schema.metadata[b"vlmscope"])["run"] == RUN
        with pytest.raises(VlmscopeError, match="unknown export format 'csv'"):
            export(store, "csv", tmp_path / "x.csv")


def test_export_names_cannot_leave_the_folder(tmp_path):
    write_run(tmp_path / "s", {"format": FORMAT, "run": {**RUN, "total_rows": 1}})
    w = PartWriter(tmp_path / "s", 0, 0, 1, "{}")
    w.append([Record(0, "../../escape", arrays={"x": np.zeros(2, np.float32)})])
    w.commit()
    with vlmscope.store.open(tmp_path / "s") as store:
        out = export(store, "npy", tmp_path / "npy")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out in p.parents or (tmp_path / "s") in p.parents for p in written)
