"""The CLI end to end, called as a function and as the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from conftest import random_image

from vlmscope.cli import main


def test_inspect_json(tiny_dirs, capsys):
    assert main(["inspect", "--model", str(tiny_dirs["qwen3_vl"]), "--device", "cpu", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["family"] == "qwen3_vl" and info["llm"]["layers"] == 3 and info["vision"]["blocks"] == 2
    assert info["vision"]["deepstack_visual_indexes"] == [0, 1] and "vision.deepstack.{k}" in info["sites"]
    assert info["attn_implementation"] == "sdpa"


def test_inspect_text(tiny_dirs, capsys):
    assert main(["inspect", "--model", str(tiny_dirs["qwen2_5_vl"]), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Qwen2.5-VL" in out and "llm.layers.{i}.attn" in out and "patch 14" in out


def test_capture_writes_arrays_and_token_map(tiny_dirs, tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(56, 84, 0).save(img)
    out = tmp_path / "out"
    rc = main(
        [
            "capture",
            str(img),
            "--prompt",
            "What is this?",
            "--model",
            str(tiny_dirs["qwen2_vl"]),
            "--device",
            "cpu",
            "--sites",
            "vision.merger,llm.layers",
            "--layers",
            "halp",
            "--tokens",
            "vision",
            "--reduce",
            "mean",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    arrays = np.load(out / "captures.npz")
    assert sorted(arrays.files) == ["llm.layers.0", "llm.layers.1", "llm.layers.2", "vision.merger"]
    assert arrays["llm.layers.1"].shape == (64,)
    tm = json.loads((out / "token_map.json").read_text())
    assert len(tm["visuals"]) == 1 and len(tm["visuals"][0]["token_boxes"]) == 6


def test_errors_are_one_line(tiny_dirs, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmscope.cli",
            "capture",
            str(tmp_path / "missing.png"),
            "--prompt",
            "x",
            "--model",
            str(tiny_dirs["qwen2_vl"]),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "image not found" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmscope.cli",
            "capture",
            "--prompt",
            "x",
            "--layers",
            "99",
            "--model",
            str(tiny_dirs["qwen2_vl"]),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "layer 99 out of range" in proc.stderr and "Traceback" not in proc.stderr
