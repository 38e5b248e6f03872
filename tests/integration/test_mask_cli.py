"""`vlmscope mask` end to end: one image, a YAML batch with failures, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import random_image

from vlmscope.cli import main


def test_mask_one_image(tiny_dirs, tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(96, 128, 0).save(img)
    out = tmp_path / "out"
    rc = main(
        [
            "mask",
            str(img),
            "--prompt",
            "What colour is the circle?",
            "--model",
            str(tiny_dirs["qwen3_vl"]),
            "--device",
            "cpu",
            "--mode",
            "both",
            "--window",
            "2",
            "--layers",
            "1-2",
            "--edges",
            "last",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
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
model: {tiny_dirs["qwen2_vl"]}
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
        proc = subprocess.run(
            [sys.executable, "-m", "vlmscope.cli", "mask", *argv], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def _bundled():
    from vlmscope.assets import bundled_model_dir

    return bundled_model_dir() is not None


def test_cli_csv_and_json_share_one_sign(tmp_path, capsys):
    """The printed drops are the CSV's drop column summed over the answer, and clean - masked."""
    import csv
    import re
    from collections import defaultdict
    from pathlib import Path

    import pytest

    import vlmscope

    if not _bundled():
        pytest.skip("the bundled shapes model is not installed")
    img = Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png"
    out = tmp_path / "out"
    assert (
        main(
            [
                "mask",
                str(img),
                "--prompt",
                "What colour is the square?",
                "--max-new-tokens",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    rows = list(csv.DictReader((out / "impacts.csv").open()))
    total: dict[str, float] = defaultdict(float)
    for r in rows:
        drop = float(r["drop"])
        assert abs(drop - (float(r["clean_logprob"]) - float(r["masked_logprob"]))) < 1e-4
        total[r["label"]] += drop
    units = {u["label"]: u for u in json.loads((out / "result.json").read_text())["units"]}
    shown = [re.fullmatch(r"\s*drop\s+(\S+)\s+'(.*?)'.*", line) for line in printed]
    shown = [(float(m.group(1)), m.group(2)) for m in shown if m]
    assert shown, printed
    for value, label in shown:
        assert abs(value - total[label]) < 1e-3 and abs(value - units[label]["total_drop"]) < 1e-3
    values = [v for v, _ in shown]
    assert values == sorted(values, reverse=True) and abs(values[0] - max(total.values())) < 1e-3
    header = next(line for line in printed if "log-probability" in line)
    assert ("largest drops" in header) == (values[0] > 0)


def test_the_cli_does_not_call_rises_drops(capsys):
    import numpy as np

    from vlmscope.commands.mask import _print_drops

    class Unit:
        def __init__(self, label):
            self.label = label

    class Result:
        units = [Unit("a"), Unit("b"), Unit("c")]
        first_change = [None, None, None]

        def __init__(self, drops):
            self.drops = np.array(drops)

        def impact(self, metric):
            return self.drops

    _print_drops(Result([-0.5, -2.0, -0.1]))  # every masking raises the answer's probability
    out = capsys.readouterr().out
    assert "largest drops" not in out and "no masking lowers" in out
    assert out.index("'c'") < out.index("'a'") < out.index("'b'")  # smallest rise first
    _print_drops(Result([1.5, -2.0, 0.3]))
    out = capsys.readouterr().out
    assert "largest drops" in out and "'b'" not in out and out.index("'a'") < out.index("'c'")
