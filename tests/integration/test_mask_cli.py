"""`vlmscope mask` end to end: one image, a YAML batch with failures, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from vlmscope.cli import main

from conftest import random_image


def test_mask_one_image(tiny_dirs, tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(96, 128, 0).save(img)
    out = tmp_path / "out"
    rc = main(["mask", str(img), "--prompt", "What colour is the circle?", "--model", str(tiny_dirs["qwen3_vl"]),
               "--device", "cpu", "--mode", "both", "--window", "2", "--layers", "1-2", "--edges", "last",
               "--max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "answer:" in printed and "units masked (knockout)" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["settings"]["layers"] == [1, 2] and result["settings"]["edges"] == ["last"]
    assert {u["kind"] for u in result["units"]} == {"text", "vision"}
    assert (out / "impacts.csv").is_file() and (out / "heatmaps" / "image0_total.png").is_file()
    assert (out / "text_importance.html").is_file()


def test_mask_config_records_failures_and_goes_on(tiny_dirs, tmp_path, capsys):
    random_image(64, 96, 1).save(tmp_path / "a.png")
    config = tmp_path / "runs.yaml"
    config.write_text(f"""
model: {tiny_dirs['qwen2_vl']}
defaults: {{max_new_tokens: 3, mode: vision}}
runs:
  - name: missing
    image: nope.png
    prompt: What colour is the circle?
  - name: wide
    image: a.png
    prompt: What colour is the circle?
    window: 7
  - name: good
    images: [a.png]
    prompt: What colour is the circle?
    perturbation: mean
    mode: both
""")
    out = tmp_path / "out"
    assert main(["mask", "--config", str(config), "--device", "cpu", "--out", str(out)]) == 1
    summary = {r["name"]: r for r in json.loads((out / "summary.json").read_text())}
    assert summary["missing"]["status"] == "error" and "image not found" in summary["missing"]["error"]
    assert "nope.png" in summary["missing"]["error"]
    assert summary["wide"]["error"].startswith("window 7 is larger than the")
    assert summary["good"]["status"] == "ok" and (out / "good" / "result.json").is_file()
    assert json.loads((out / "good" / "result.json").read_text())["settings"]["perturbation"] == "mean"
    assert "1 of 3 runs done" in capsys.readouterr().out


def test_mask_errors_are_one_line(tiny_dirs, tmp_path):
    img = tmp_path / "img.png"
    random_image(56, 84, 0).save(img)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("runs: [{image: a.png, prompt: hi}]\nmodle: x\n")
    model = ["--model", str(tiny_dirs["qwen2_vl"]), "--device", "cpu"]
    cases = [
        ([str(img), "--prompt", "x", "--window", "5", *model], "window 5 is larger than the 2x3 token grid"),
        ([str(img), "--prompt", "x", "--mode", "", *model], "unknown mask mode ''"),
        ([str(img), *model], "give IMAGE... --prompt P, or --config FILE.yaml"),
        (["--config", str(bad_yaml), "--prompt", "x", *model], "not both"),
        (["--config", str(bad_yaml), *model], "unknown key 'modle'"),
        (["--config", str(tmp_path / "none.yaml"), *model], "config file not found"),
    ]
    for argv, message in cases:
        proc = subprocess.run([sys.executable, "-m", "vlmscope.cli", "mask", *argv], capture_output=True, text=True,
                              cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
