"""A full disk or a read-only destination: one line and status 2 from every command that writes,
checked before any work where it can be, no temporary file left behind, and nothing written
before lost (a store's finished parts stay, and --resume then equals an uninterrupted run)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from filesystems import namespaces_work, run_in_namespace
from test_extract import _same_store

import vlmscope
from vlmscope import VlmscopeError
from vlmscope.cli import main
from vlmscope.files import check_writable, failure_line

IMG = str(Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png")
PROMPT = ["--prompt", "What colour is the square?", "--max-new-tokens", "2"]
EXTRACT = ["--preset", "halp", "--checkpoint-every", "4", "--batch-size", "4", "--max-new-tokens", "2", "--no-progress"]
H5_FULL = (
    "Can't write data (file write failed: time = Mon Dec  7 10:00:00 2026\n, filename = '{}', "
    "file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 16)"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 hard shapes questions, their halp store, probes trained on it, and a caption file."""
    root = tmp_path_factory.mktemp("disk")
    assert main(["shapes", "--hard", "--n", "24", "--seed", "5", "--out", str(root / "data")]) == 0
    csv = root / "data" / "questions.csv"
    assert main(["extract", str(csv), *EXTRACT, "--out", str(root / "store")]) == 0
    assert main(["probe", "train", str(root / "store"), "--folds", "3", "--out", str(root / "probes")]) == 0
    (root / "captions.txt").write_text("a red square\na blue circle\na green triangle\n")
    return root


def _one_line(result: dict, reason: str) -> None:
    assert result["code"] == 2 and len(result["err"]) == 1, result
    assert result["err"][0].startswith("vlmscope: error: ") and reason in result["err"][0], result


def test_write_failures_are_named(tmp_path):
    assert failure_line(OSError(errno.ENOSPC, "No space left on device", "/x/y.npz")) == (
        "cannot write '/x/y.npz': no space left on device"
    )
    assert failure_line(RuntimeError(H5_FULL.format("/s/.part-000001.h5.tmp"))) == (
        "cannot write '/s/.part-000001.h5.tmp': no space left on device"
    )
    assert (
        failure_line(OSError(errno.EROFS, "Read-only file system")) == "cannot write the output: read-only file system"
    )
    assert failure_line(OSError(errno.ENOENT, "missing")) is None and failure_line(ValueError("x")) is None


def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == tmp_path else real(p, mode, **k))
    with pytest.raises(VlmscopeError, match=r"cannot write export .*: permission denied on"):
        check_writable(tmp_path / "out.parquet", "export")
    loads = []
    monkeypatch.setattr("vlmscope.models.loading.load_model", lambda *a, **k: loads.append(1))
    code = main(["run", IMG, *PROMPT, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "permission denied" in err[0] and not loads


def test_a_full_disk_in_extract_is_one_line_and_resume_equals_an_uninterrupted_run(data, tmp_path, monkeypatch, capsys):
    from vlmscope.store.writer import PartWriter

    real = PartWriter._flush

    def full_at_part_1(self, path, whole_chunks=False):  # what h5py raises when the disk fills
        if self.final.name == "part-000001.h5":
            raise RuntimeError(H5_FULL.format(self.tmp))
        return real(self, path, whole_chunks)

    csv, out = data / "data" / "questions.csv", tmp_path / "store"
    monkeypatch.setattr(PartWriter, "_flush", full_at_part_1)
    code = main(["extract", str(csv), *EXTRACT, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"cannot write store {str(out)!r}: no space left on device" in err[0] and "--resume" in err[0]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "part-000000.h5").is_file() and not (out / "part-000001.h5").exists()
    monkeypatch.setattr(PartWriter, "_flush", real)
    assert main(["extract", str(csv), *EXTRACT, "--out", str(out), "--resume"]) == 0
    _same_store(out, data / "store")


needs_namespaces = pytest.mark.skipif(not namespaces_work(), reason="no user namespaces here to mount a tmpfs")


@needs_namespaces
def test_every_writer_on_a_full_file_system(data, tmp_path):
    results = run_in_namespace(
        f"""
full, roomy = Path({str(tmp_path / "full")!r}), Path({str(tmp_path / "roomy")!r})
mount(full, "12k")  # room for the marker file and a little more, not for a whole output
mount(roomy, "4500k")  # a few parts of the store and the reserve a part keeps
IMG, PROMPT, EXTRACT = {IMG!r}, {PROMPT!r}, {EXTRACT!r}
store, csv = {str(data / "store")!r}, {str(data / "data" / "questions.csv")!r}
cases = {{
    "run": ["run", IMG, *PROMPT, "--methods", "raw", "--out", full / "run"],
    "attention": ["attention", IMG, *PROMPT, "--out", full / "attention"],
    "mask": ["mask", IMG, *PROMPT, "--out", full / "mask"],
    "export npy": ["store", "export", store, "--format", "npy", "--out", full / "npy"],
    "export parquet": ["store", "export", store, "--format", "parquet", "--out", full / "x.parquet"],
    "lens index": ["lens", "index", {str(data / "captions.txt")!r}, "--layers", "all", "--out", full / "index"],
    "probe train": ["probe", "train", store, "--folds", "3", "--out", full / "probes"],
}}
for name, argv in cases.items():
    RESULTS[name] = cli(argv)
    RESULTS[name]["files"] = files(full)
    subprocess.run(["sh", "-c", f"rm -rf {{full}}/*"], check=True)
RESULTS["extract"] = cli(["extract", csv, *EXTRACT, "--out", roomy / "store"])
RESULTS["extract"]["files"] = files(roomy / "store")
remount(roomy, "size=64m")  # space freed
RESULTS["resume"] = cli(["extract", csv, *EXTRACT, "--out", roomy / "store", "--resume"])
subprocess.run(["cp", "-r", str(roomy / "store"), {str(tmp_path / "resumed")!r}], check=True)
""",
        tmp_path,
    )
    for name in ("run", "attention", "mask", "export npy", "export parquet", "lens index", "probe train"):
        _one_line(results[name], "no space left on device")
        assert not [f for f in results[name]["files"] if f.endswith(".tmp")], (name, results[name]["files"])
    assert results["export npy"]["files"] == [] and results["export parquet"]["files"] == []  # nothing half-written
    _one_line(results["extract"], "cannot write store")
    assert "no space left on device" in results["extract"]["err"][0]
    parts = [f for f in results["extract"]["files"] if "part" in f]
    assert 1 <= len(parts) < 6 and all(f.endswith(".h5") for f in parts), parts  # finished parts, nothing else
    assert results["resume"]["code"] == 0, results["resume"]
    _same_store(tmp_path / "resumed", data / "store")


@needs_namespaces
def test_every_writer_refuses_a_read_only_destination_before_any_work(data, tmp_path):
    shutil.copytree(data / "probes", tmp_path / "probes")
    results = run_in_namespace(
        f"""
import vlmscope.models.loading, vlmscope.store.export
ro = Path({str(tmp_path / "ro")!r})
mount(ro, "64k", "ro")
work = []
real_load, real_rows = vlmscope.models.loading.load_model, vlmscope.store.export._rows
vlmscope.models.loading.load_model = lambda *a, **k: (work.append("model"), real_load(*a, **k))[1]
vlmscope.store.export._rows = lambda *a, **k: (work.append("rows"), real_rows(*a, **k))[1]
IMG, PROMPT, EXTRACT = {IMG!r}, {PROMPT!r}, {EXTRACT!r}
store, csv = {str(data / "store")!r}, {str(data / "data" / "questions.csv")!r}
cases = {{
    "run": ["run", IMG, *PROMPT, "--out", ro / "run"],
    "attention": ["attention", IMG, *PROMPT, "--out", ro / "attention"],
    "mask": ["mask", IMG, *PROMPT, "--out", ro / "mask"],
    "capture": ["capture", IMG, "--prompt", "hi", "--sites", "llm.layers.0", "--out", ro / "capture"],
    "compare": ["compare", IMG, "--prompt", "hi", "--model", "bundled", "--model", "Qwen/other", "--out", ro / "cmp"],
    "lens show": ["lens", "show", IMG, "--prompt", "hi", "--out", ro / "lens"],
    "lens index": ["lens", "index", {str(data / "captions.txt")!r}, "--layers", "all", "--out", ro / "index"],
    "extract": ["extract", csv, *EXTRACT, "--out", ro / "store"],
    "export npy": ["store", "export", store, "--format", "npy", "--out", ro / "npy"],
    "export parquet": ["store", "export", store, "--format", "parquet", "--out", ro / "x.parquet"],
    "probe train": ["probe", "train", store, "--out", ro / "probes"],
    "probe apply": ["probe", "apply", {str(tmp_path / "probes")!r}, store, "--out", ro / "risk.csv"],
    "evaluate": ["evaluate", "--n", "2", "--out", ro / "evaluate.json"],
    "heads": ["heads", "--n", "2", "--out", ro / "heads.json"],
    "shapes": ["shapes", "--n", "2", "--out", ro / "data"],
}}
for name, argv in cases.items():
    work.clear()
    RESULTS[name] = {{**cli(argv), "work": list(work)}}
""",
        tmp_path,
    )
    assert len(results) == 15
    for name, result in results.items():
        _one_line(result, "read-only file system")
        assert result["work"] == [], (name, result)  # refused before the model loads or a row is read
