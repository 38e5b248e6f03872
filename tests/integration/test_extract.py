"""`vlmscope extract` end to end on tiny models: stored arrays against transformers itself, a run
killed with SIGKILL and resumed, failures recorded row by row, the store commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import random_image

import vlmscope.store
from vlmscope.cli import main
from vlmscope.data.shapes import export_vqa
from vlmscope.data.sources import open_source
from vlmscope.extraction import extract, make_preset
from vlmscope.store.layout import finished_parts


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Six shapes questions (questions.csv + images/), images of 192 x 192."""
    return export_vqa(6, tmp_path_factory.mktemp("shapes"), seed=3)


def _reference(scope, question, image_path, max_new_tokens=None):
    """Plain transformers: the processor, `model(**inputs, output_hidden_states=True)`, a raw hook
    on the last vision block, and `generate` for the answer."""
    from PIL import Image

    proc, model = scope.processor, scope.model
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    inputs = proc(text=[text], images=[Image.open(image_path).convert("RGB")], return_tensors="pt")
    got = {}
    visual = model.model.visual
    h = visual.blocks[-1].register_forward_hook(lambda m, a, out: got.__setitem__("block", out))
    try:
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
    finally:
        h.remove()
    answer = None
    if max_new_tokens:
        with torch.no_grad():
            seq = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answer = proc.tokenizer.decode(seq[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    ids = inputs["input_ids"][0]
    vision = (ids == model.config.image_token_id).nonzero().flatten().tolist()
    block = got["block"][0] if isinstance(got["block"], tuple) else got["block"]
    return {
        "hs": out.hidden_states,
        "vision": vision,
        "query": len(ids) - 1,
        "block": block,
        "answer": answer,
        "inputs": inputs,
    }


def _store(tmp_path, scope, shapes, preset, **kw):
    out = tmp_path / f"out-{preset.name}"
    summary = extract(
        scope,
        open_source(shapes, limit=kw.pop("limit", 3)),
        out,
        preset,
        batch_size=2,
        checkpoint_every=2,
        progress=False,
        **kw,
    )
    assert summary.complete
    return vlmscope.store.open(out)


def test_halp_equals_transformers(scopes, family, shapes, tmp_path):
    scope = scopes[family]
    n = scope.adapter.num_layers
    injected = set(range(scope.adapter.num_deepstack))  # Qwen3-VL: hidden_states[i+1] is before the injection
    norm = scope.adapter.language_model.norm
    with _store(tmp_path, scope, shapes, make_preset("halp", max_new_tokens=4)) as store:
        assert len(store) == 3 and len(finished_parts(store.path)) == 2
        table = store.samples()
        for k in range(3):
            image = shapes.parent / "images" / f"{json.loads(table['images'][k])[0]}.png"
            ref = _reference(scope, table["question"][k], image, max_new_tokens=4)
            hs = ref["hs"]
            torch.testing.assert_close(
                torch.from_numpy(store["vf/vision.blocks.1"][k]), ref["block"].mean(0), atol=1e-4, rtol=1e-4
            )
            for name, pos in (("vt", ref["vision"][-1]), ("qt", ref["query"])):
                for i in range(n):
                    got = torch.from_numpy(store[f"{name}/llm.layers.{i}"][k])
                    if i == n - 1:  # hidden_states[n] is after the final norm
                        torch.testing.assert_close(norm(got[None])[0], hs[n][0, pos], atol=1e-4, rtol=1e-4)
                    elif not (name == "vt" and i in injected):
                        torch.testing.assert_close(got, hs[i + 1][0, pos], atol=1e-4, rtol=1e-4)
            assert table["generated_answer"][k] == ref["answer"]
        csv_answers = [line.split(",")[3] for line in shapes.read_text().splitlines()[1:4]]
        assert table["gt_answer"].tolist() == csv_answers


def test_three_point_equals_transformers(scopes, family, shapes, tmp_path):
    scope = scopes[family]
    with _store(tmp_path, scope, shapes, make_preset("three-point")) as store:
        table = store.samples()
        for k in range(3):
            image = shapes.parent / "images" / f"{json.loads(table['images'][k])[0]}.png"
            ref = _reference(scope, table["question"][k], image)
            inputs = ref["inputs"]
            with torch.no_grad():
                feats = scope.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
            feats = getattr(feats, "pooler_output", feats)
            feats = torch.cat(list(feats)) if isinstance(feats, (list, tuple)) else feats
            merger = torch.from_numpy(store["vision.merger"][k])
            torch.testing.assert_close(merger, feats, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(
                torch.from_numpy(store["mean/vision.merger"][k]), feats.mean(0), atol=1e-4, rtol=1e-4
            )
            norm = torch.from_numpy(store["llm.norm"][k])
            torch.testing.assert_close(norm, ref["hs"][-1][0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(torch.from_numpy(store["mean/llm.norm"][k]), norm.mean(0))
            blocks = torch.from_numpy(store["vision.blocks.1"][k])
            assert blocks.shape == ref["block"].shape  # raster order, so compare order-free statistics
            torch.testing.assert_close(blocks.mean(0), ref["block"].mean(0), atol=1e-4, rtol=1e-4)
            assert store["visual_token_lens"][k].tolist() == [len(ref["vision"])]
            assert store["grid_thw"][k].tolist() == inputs["image_grid_thw"].tolist()


def test_layers_preset_tokens_and_norm_statistics(scopes, shapes, tmp_path):
    scope = scopes["qwen2_vl"]
    with _store(tmp_path, scope, shapes, make_preset("layers", layers="0,1")) as store:
        assert sorted(store.columns) == [
            "grid_thw",
            "llm.layers.0",
            "llm.layers.1",
            "norms/llm.layers.0",
            "norms/llm.layers.1",
            "visual_token_lens",
        ]
        table = store.samples()
        image = shapes.parent / "images" / f"{json.loads(table['images'][0])[0]}.png"
        ref = _reference(scope, table["question"][0], image)
        tokens = torch.from_numpy(store["llm.layers.1"][0])
        torch.testing.assert_close(tokens, ref["hs"][2][0, ref["vision"]], atol=1e-4, rtol=1e-4)
        norms = tokens.norm(dim=-1)
        stats = store["norms/llm.layers.1"][0]
        assert stats.shape == (1, 4)
        np.testing.assert_allclose(
            stats[0], [norms.mean(), norms.std(unbiased=False), norms.min(), norms.max()], rtol=1e-5
        )


def _cli(*args):
    return [sys.executable, "-m", "vlmscope.cli", "extract", *map(str, args), "--device", "cpu", "--no-progress"]


def _same_store(a, b):
    with vlmscope.store.open(a) as x, vlmscope.store.open(b) as y:
        assert len(x) == len(y) and x.columns.keys() == y.columns.keys()
        tx, ty = x.samples(), y.samples()
        assert tx.keys() == ty.keys() and all((tx[k] == ty[k]).all() for k in tx)
        for name, col in x.columns.items():
            for i in range(len(x)):
                np.testing.assert_array_equal(col[i], y[name][i])
        assert x.failures() == y.failures()


def test_killed_run_resumes_to_the_same_store(tiny_dirs, tmp_path, capsys):
    data = export_vqa(12, tmp_path / "data", seed=5)
    args = [
        data,
        "--model",
        tiny_dirs["qwen2_5_vl"],
        "--checkpoint-every",
        "2",
        "--batch-size",
        "1",
        "--max-new-tokens",
        "3",
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not finished_parts(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = finished_parts(killed)
    assert 1 <= len(done) < 6, proc.stderr.read().decode()[-2000:]
    with vlmscope.store.open(killed) as store:  # what survived is readable as it is
        assert len(store) == 2 * len(done)
    assert main(["extract", *map(str, args), "--out", str(killed), "--device", "cpu"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    resumed = subprocess.run(_cli(*args, "--out", killed, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done)} were already done" in resumed.stdout and "complete, 12 rows" in resumed.stdout
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]
    straight = tmp_path / "straight"
    assert main(["extract", *map(str, args), "--out", str(straight), "--device", "cpu", "--no-progress"]) == 0
    _same_store(killed, straight)


def test_bad_rows_are_recorded_and_nothing_leaves_the_output(tiny_dirs, tmp_path, capsys):
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    random_image(64, 64, 0).save(images / "good.png")
    (images / "corrupt.png").write_bytes(b"\x89PNG broken")
    random_image(1, 300, 1).save(images / "thin.png")  # the processor refuses an aspect ratio over 200
    csv = tmp_path / "data" / "vqa.csv"
    csv.write_text(
        "question_id,image_id,question,answer\n"
        "1,good.png,What is it?,a\n2,missing.png,What?,b\n3,corrupt.png,What?,c\n"
        "4,../../etc/passwd,What?,d\n5,,What?,e\n6,good,Again?,f\n7,thin.png,What?,g\n"
    )
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    assert (
        main(
            [
                "extract",
                str(csv),
                "--model",
                str(tiny_dirs["qwen2_vl"]),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--max-new-tokens",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "extracted 2 rows, 5 failed (image 3, input 1, source 1)" in capsys.readouterr().out
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["sample_id"]: (f["stage"], f["reason"]) for f in failures}
    assert "image not found" in reasons["2"][1] and "cannot read image" in reasons["3"][1]
    assert "escapes the images directory" in reasons["4"][1] and reasons["5"][0] == "source"
    assert (
        reasons["7"][0] == "input"
        and "is 300x1: the Qwen-VL processors need an aspect ratio under 200" in reasons["7"][1]
    )
    with vlmscope.store.open(out) as store:
        assert store.samples()["sample_id"].tolist() == ["1", "6"]
    assert all(out in p.parents for p in set(tmp_path.rglob("*")) - before - {out})

    bad = tmp_path / "data" / "nocol.csv"
    bad.write_text("question_id,question,answer\n1,What?,a\n")
    proc = subprocess.run(
        _cli(bad, "--model", tiny_dirs["qwen2_vl"], "--out", tmp_path / "out2"), capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "has no image column" in proc.stderr
    assert not (tmp_path / "out2").exists()


def test_out_of_memory_fails_one_row_and_the_run_goes_on(scopes, shapes, tmp_path, monkeypatch):
    scope = scopes["qwen2_vl"]
    preset = make_preset("three-point")
    real = type(preset).run
    row1 = list(open_source(shapes, limit=2))[1]
    pixels1 = scope.prepare(vlmscope.Example(row1.question, images=row1.load_images())).inputs["pixel_values"]

    def run(self, scope, batch, dtype):  # row 1 is too large, alone or in a batch
        if any(torch.equal(batch.select(b).inputs["pixel_values"], pixels1) for b in range(batch.size)):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, scope, batch, dtype)

    monkeypatch.setattr(type(preset), "run", run)
    summary = extract(
        scope, open_source(shapes, limit=4), tmp_path / "out", preset, batch_size=4, checkpoint_every=4, progress=False
    )
    assert summary.rows == 3 and summary.failures == {"model": 1} and summary.complete
    with vlmscope.store.open(tmp_path / "out") as store:
        assert store.samples()["sample_id"].tolist() == ["0", "2", "3"]
        assert store.failures()[0]["reason"].startswith("out of memory: CUDA out of memory")


def test_custom_preset_and_store_commands(tiny_dirs, shapes, tmp_path, capsys):
    out = tmp_path / "custom"
    assert (
        main(
            [
                "extract",
                str(shapes),
                "--model",
                str(tiny_dirs["qwen3_vl"]),
                "--device",
                "cpu",
                "--out",
                str(out),
                "--sites",
                "vision.merger,llm.layers",
                "--layers",
                "-1",
                "--tokens",
                "vision",
                "--reduce",
                "max",
                "--test",
                "--save-dtype",
                "float16",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["store", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "preset custom" in info and "3 in 1/1 parts (complete)" in info and "llm.layers.2" in info
    assert main(["store", "info", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["columns"]["vision.merger"] == {"kind": "fixed", "shape": [64], "dtype": "float16"}
    assert data["model"]["attn_implementation"] == "sdpa" and data["packages"]["transformers"]
    assert main(["store", "export", str(out), "--format", "npy", "--out", str(tmp_path / "npy")]) == 0
    assert len(list((tmp_path / "npy").glob("*/llm.layers.2.npy"))) == 3
    assert (
        main(
            [
                "extract",
                str(shapes),
                "--model",
                str(tiny_dirs["qwen3_vl"]),
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "x"),
                "--preset",
                "halp",
                "--sites",
                "llm.norm",
            ]
        )
        == 2
    )
    assert "--sites apply to the custom preset only" in capsys.readouterr().err


def test_named_plan_lines_take_one_site_twice(scopes, images):
    from vlmscope import CapturePlan, Example, VlmscopeError

    scope = scopes["qwen2_vl"]
    ex = Example("What is it?", images=images[:1])
    plan = (
        CapturePlan.of("llm.layers.1", tokens="vision_last", name="vt")
        .add("llm.layers.1", tokens="query", name="qt")
        .add("llm.layers.1.attn", tokens="query", name="a")
        .add("llm.layers.1.attn", tokens="vision", name="b")
    )
    trace = scope.forward(ex, plan)
    assert sorted(trace.sites) == ["a/llm.layers.1.attn", "b/llm.layers.1.attn", "qt/llm.layers.1", "vt/llm.layers.1"]
    for name, tokens in (("vt", "vision_last"), ("qt", "query")):
        torch.testing.assert_close(
            trace[f"{name}/llm.layers.1"][0], scope.forward(ex, ["llm.layers.1"], tokens=tokens)["llm.layers.1"][0]
        )
    for name, tokens in (("a", "query"), ("b", "vision")):
        torch.testing.assert_close(
            trace[f"{name}/llm.layers.1.attn"][0],
            scope.forward(ex, ["llm.layers.1.attn"], tokens=tokens)["llm.layers.1.attn"][0],
        )
    with pytest.raises(VlmscopeError, match="bad capture name 'a/b'"):
        CapturePlan.of("llm.norm", name="a/b")
