"""A dataset run meeting bad rows and interruptions: giant images and over-long prompts become
recorded failures, a changed source or a second process is refused, a damaged part is redone
alone (Ctrl-C: test_ctrl_c.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from bad_files import png_header
from conftest import random_image
from test_extract import _same_store

import vlmscope.store
from vlmscope import VlmscopeError
from vlmscope.cli import main
from vlmscope.data.shapes import export_vqa
from vlmscope.data.sources import open_source
from vlmscope.extraction import extract, make_preset
from vlmscope.limits import check_context_length
from vlmscope.store.layout import part_path


def _cli(*args):
    return [sys.executable, "-m", "vlmscope.cli", "extract", *map(str, args), "--device", "cpu", "--no-progress"]


def _run(scope, csv, out, **kw):
    kw = {"batch_size": 2, "checkpoint_every": 2, "progress": False, **kw}
    return extract(scope, open_source(csv, limit=kw.pop("limit", None)), out, make_preset("three-point"), **kw)


def test_giant_images_are_recorded_failures(scopes, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    random_image(64, 64, 0).save(images / "good.png")
    (images / "bomb.png").write_bytes(png_header(30000, 30000))
    (images / "giant.png").write_bytes(png_header(10000, 10000))
    csv = tmp_path / "q.csv"
    csv.write_text(
        "question_id,image_id,question\n1,good.png,What?\n2,bomb.png,What?\n3,giant.png,What?\n4,good.png,Again?\n"
    )
    summary = _run(scopes["qwen2_vl"], csv, tmp_path / "out")
    assert summary.complete and summary.rows == 2 and summary.failures == {"image": 2}
    with vlmscope.store.open(tmp_path / "out") as store:
        assert store.samples()["sample_id"].tolist() == ["1", "4"]
        reasons = {f["sample_id"]: f["reason"] for f in store.failures()}
    assert "bomb.png' is too large" in reasons["2"] and "10000x10000" in reasons["3"]


def test_prompt_longer_than_the_context_is_a_recorded_failure(scopes, tmp_path, monkeypatch):
    from vlmscope import Example

    scope = scopes["qwen2_vl"]
    random_image(56, 56, 0).save(tmp_path / "a.png")
    questions = ["What?", "Which colour?", "Where " + "far " * 60 + "?", "Why?"]
    lengths = [scope.prepare(Example(q, images=[tmp_path / "a.png"])).length for q in questions]
    limit = max(lengths[:2] + lengths[3:])
    assert lengths[2] > limit
    monkeypatch.setattr(scope.model.config.text_config, "max_position_embeddings", limit)
    header = "question_id,image_id,question\n"
    (tmp_path / "all.csv").write_text(header + "".join(f"{i},a.png,{q}\n" for i, q in enumerate(questions)))
    (tmp_path / "short.csv").write_text(header + "".join(f"{i},a.png,{q}\n" for i, q in enumerate(questions) if i != 2))
    summary = _run(scope, tmp_path / "all.csv", tmp_path / "all", batch_size=4, checkpoint_every=4)
    assert summary.failures == {"input": 1} and summary.rows == 3
    short = _run(scope, tmp_path / "short.csv", tmp_path / "short", batch_size=4, checkpoint_every=4)
    with vlmscope.store.open(tmp_path / "all") as a, vlmscope.store.open(tmp_path / "short") as b:
        (failure,) = a.failures()
        assert failure["sample_id"] == "2" and failure["stage"] == "input"
        assert f"the prompt is {lengths[2]} tokens" in failure["reason"]
        assert f"context of {limit} tokens" in failure["reason"]
        assert a.samples()["sample_id"].tolist() == b.samples()["sample_id"].tolist() == ["0", "1", "3"]
        for name in a.columns:  # the others ran as if the long row had never been there
            for i in range(3):
                assert (a[name][i] == b[name][i]).all(), name
    assert short.rows == 3


def test_check_context_length(scopes):
    config = scopes["qwen2_vl"].model.config
    n = config.text_config.max_position_embeddings
    assert check_context_length(config, n) is None and check_context_length(config.text_config, n - 4, 4) is None
    msg = check_context_length(config, n - 3, 4)
    assert msg == (
        f"the prompt is {n - 3} tokens + 4 to generate = {n + 1}, longer than the model's context of {n} "
        "tokens (text_config.max_position_embeddings); shorten the prompt or lower max_pixels"
    )


def test_resume_refuses_a_shuffled_source(scopes, tmp_path):
    scope = scopes["qwen2_vl"]
    csv = export_vqa(8, tmp_path / "data", seed=2)
    out = tmp_path / "out"
    _run(scope, csv, out)
    part_path(out, 3).unlink()  # what a run killed after its first three parts leaves
    original = csv.read_text()
    header, *rows = original.splitlines()
    csv.write_text("\n".join([header, *rows[::-1]]) + "\n")
    with pytest.raises(VlmscopeError, match=r"rows of source .*questions.csv' changed since the run started"):
        _run(scope, csv, out, resume=True)
    csv.write_text(original)
    summary = _run(scope, csv, out, resume=True)
    assert summary.complete and summary.parts_written == 1 and summary.store_rows == 8


def test_damaged_part_is_set_aside_and_only_its_rows_redone(scopes, tmp_path, capsys):
    scope = scopes["qwen2_vl"]
    csv = export_vqa(6, tmp_path / "data", seed=4)
    out, intact = tmp_path / "out", tmp_path / "intact"
    _run(scope, csv, out)
    shutil.copytree(out, intact)
    data = part_path(out, 1).read_bytes()
    part_path(out, 1).write_bytes(data[: len(data) // 3])
    assert main(["store", "info", str(out)]) == 0
    assert "damaged  part-000001.h5: " in capsys.readouterr().out
    assert main(["store", "verify", str(out)]) == 1
    summary = _run(scope, csv, out, resume=True)
    assert summary.parts_set_aside == ["part-000001.h5.damaged"] and summary.parts_written == 1
    assert summary.parts_done_before == 2 and summary.complete
    assert (out / "part-000001.h5.damaged").read_bytes() == data[: len(data) // 3]
    _same_store(out, intact)


def flip_inside_a_chunk(path) -> None:
    """Flip bytes in the middle of a compressed chunk of the part's largest feature: the file's
    structure stays sound, only decompressing that chunk fails."""
    import h5py

    with h5py.File(path, "r") as f:
        names = []
        f.visititems(
            lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and n.startswith("features/") else None
        )
        name = max(names, key=lambda n: f[n].id.get_storage_size())
        info = f[name].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    middle = info.byte_offset + info.size // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def test_resume_redoes_a_part_whose_chunks_are_corrupt(scopes, tmp_path, capsys):
    scope = scopes["qwen2_vl"]
    csv = export_vqa(6, tmp_path / "data", seed=4)
    out, intact = tmp_path / "out", tmp_path / "intact"
    _run(scope, csv, out)
    shutil.copytree(out, intact)
    flip_inside_a_chunk(part_path(out, 1))
    assert main(["store", "verify", str(out)]) == 1
    assert "part-000001.h5  damaged" in capsys.readouterr().out
    summary = _run(scope, csv, out, resume=True)
    assert summary.parts_set_aside == ["part-000001.h5.damaged"] and summary.parts_written == 1
    assert summary.complete
    assert main(["store", "verify", str(out)]) == 0
    _same_store(out, intact)
    assert main(["store", "export", str(out), "--format", "npy", "--out", str(tmp_path / "npy")]) == 0


def _wait(predicate, proc, what: str, seconds: float = 180):
    deadline = time.time() + seconds
    while not predicate():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _refuse_loading(monkeypatch):
    import vlmscope.models.loading
    import vlmscope.scope

    refuse = lambda *a, **k: pytest.fail("the model was loaded")  # noqa: E731
    monkeypatch.setattr(vlmscope.scope, "load", refuse)
    monkeypatch.setattr(vlmscope.models.loading, "load_model", refuse)


def test_second_process_on_a_running_store_is_refused(tiny_dirs, tmp_path, capsys, monkeypatch):
    csv = export_vqa(6, tmp_path / "data", seed=6)
    out = tmp_path / "out"
    args = [
        csv,
        "--model",
        tiny_dirs["qwen2_vl"],
        "--checkpoint-every",
        "2",
        "--batch-size",
        "1",
        "--max-new-tokens",
        "2",
    ]
    first = subprocess.Popen(_cli(*args, "--out", out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (out / "run.json").is_file(), first, "run.json")
        os.kill(first.pid, signal.SIGSTOP)  # a stopped process still holds its lock: no race on timing
        _refuse_loading(monkeypatch)  # refused before any model is loaded
        assert main(["extract", *map(str, args[:3]), "--out", str(out), "--resume", "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use: process {first.pid} is extracting into it" in err
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "complete, 6 rows" in stdout


def test_non_utf8_csv_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    random_image(32, 32, 0).save(tmp_path / "a.png")
    rows = "".join(f"{i},a.png,Question {i} {'x' * 60}?\n" for i in range(200))
    (tmp_path / "q.csv").write_bytes(("question_id,image_id,question\n" + rows).encode() + b"200,a.png,caf\xe9?\n")
    _refuse_loading(monkeypatch)  # the encoding error must come before any model loads
    assert main(["extract", str(tmp_path / "q.csv"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not UTF-8: line 202 has byte 0xe9" in err
    assert not (tmp_path / "out").exists()
