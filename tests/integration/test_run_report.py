"""The main job and the attention / evaluate commands, end to end on a tiny model."""

from __future__ import annotations

import json

from conftest import random_image

from vlmscope.cli import main
from vlmscope.methods.registry import MAP_METHODS


def test_run_writes_one_self_contained_report(tiny_dirs, tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(64, 96, 0).save(img)
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(img),
                "--prompt",
                "What colour is the circle?",
                "--model",
                str(tiny_dirs["qwen3_vl"]),
                "--device",
                "cpu",
                "--max-new-tokens",
                "3",
                "--text",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out.splitlines()
    answer = json.loads((out / "answer.json").read_text())
    assert printed[0] == answer["answer"] and printed[1].endswith("report.html")
    page = (out / "report.html").read_text()
    n, n_methods = len(answer["tokens"]), len(MAP_METHODS)
    # the glance grid: one cell per method x token, each with its per-token and shared-scale layer
    assert page.count('<button class="cell"') == n_methods * n
    assert page.count('class="layer s-token"') == page.count('class="layer s-shared"') == n_methods * n
    # the image is embedded once (a CSS background every view reuses), beside the detail view
    assert page.count("background-image: url(") == 1 and 'id="d-title"' in page
    # text importance of every method (--text), provenance and the token map
    assert "<h3>masking: the prompt's text tokens</h3>" in page and "<h3>raw: the prompt's text tokens</h3>" in page
    assert ">attention implementation</th><td>sdpa<" in page and str(tiny_dirs["qwen3_vl"]) in page
    assert "<th>token grid</th>" in page
    assert "logit lens of the vision tokens" in page and "srcdoc=" in page
    assert "<script src" not in page and 'src="http' not in page


def test_pixel_limits_reach_the_processor(tiny_dirs, tmp_path, capsys):
    """--min-pixels / --max-pixels change the token grid in run, attention and mask."""
    img = tmp_path / "img.png"
    random_image(128, 128, 2).save(img)
    model = ["--model", str(tiny_dirs["qwen2_vl"]), "--device", "cpu", "--max-new-tokens", "2"]
    grids = {}
    for limit in ("--max-pixels", "--min-pixels"):
        value = "3136" if limit == "--max-pixels" else "200704"
        out = tmp_path / f"run{limit}"
        assert (
            main(
                [
                    "run",
                    str(img),
                    "--prompt",
                    "Where?",
                    *model,
                    "--methods",
                    "raw",
                    "--lens",
                    "none",
                    limit,
                    value,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        grids[limit] = json.loads((out / "token_map.json").read_text())["visuals"][0]["merged_thw"]
        att = tmp_path / f"att{limit}"
        assert (
            main(
                [
                    "attention",
                    str(img),
                    "--prompt",
                    "Where?",
                    *model,
                    "--formats",
                    "npz",
                    limit,
                    value,
                    "--out",
                    str(att),
                ]
            )
            == 0
        )
        assert json.loads((att / "token_map.json").read_text())["visuals"][0]["merged_thw"] == grids[limit]
        mask = tmp_path / f"mask{limit}"
        assert main(["mask", str(img), "--prompt", "Where?", *model, limit, value, "--out", str(mask)]) == 0
        assert json.loads((mask / "result.json").read_text())["token_map"]["visuals"][0]["merged_thw"] == grids[limit]
    t, h, w = grids["--max-pixels"]
    t2, h2, w2 = grids["--min-pixels"]
    assert h * w < h2 * w2  # 128 x 128 px shrunk under a small maximum, grown over a large minimum


def test_attention_command_keeps_chosen_tokens(tiny_dirs, tmp_path, capsys):
    img = tmp_path / "img.png"
    random_image(64, 96, 1).save(img)
    out = tmp_path / "att"
    assert (
        main(
            [
                "attention",
                str(img),
                "--prompt",
                "Where?",
                "--model",
                str(tiny_dirs["qwen2_5_vl"]),
                "--device",
                "cpu",
                "--max-new-tokens",
                "4",
                "--tokens",
                "0,2",
                "--heads",
                "0-1",
                "--layers",
                "-1",
                "--agg",
                "max",
                "--formats",
                "png,npz",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    import numpy as np

    maps = np.load(out / "maps.npz")["maps"]
    assert maps.shape == (2, 6)
    assert len(list((out / "tokens").glob("*_heatmap.png"))) == 2


def test_attention_figures_are_titled_vector_and_display_sized(tiny_dirs, tmp_path, capsys):
    import re

    from PIL import Image

    img = tmp_path / "wide.png"
    random_image(1500, 2400, 4).save(img)
    out = tmp_path / "att"
    assert (
        main(
            [
                "attention",
                str(img),
                "--prompt",
                "Where?",
                "--model",
                str(tiny_dirs["qwen2_vl"]),
                "--device",
                "cpu",
                "--max-new-tokens",
                "2",
                "--formats",
                "png,pdf,html",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    n = len(list((out / "tokens").glob("*_heatmap.png")))
    assert n >= 1
    pdf = (out / "maps.pdf").read_bytes()
    # the grid, then one page per token; text as fonts (vector), images no larger than display size
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1 + n
    assert b"/Font" in pdf
    widths = [int(w) for w in re.findall(rb"/Width (\d+)", pdf)]
    assert widths and max(widths) <= 1024
    for path in (out / "tokens").glob("*_heatmap.png"):
        heat = Image.open(path)
        assert heat.height == 640 and heat.width > 1024  # 1024 x 640 map + its colour bar
    page = (out / "report.html").read_text()
    assert "Where?" in page and "scale: per token" in page


def test_evaluate_command_writes_json(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny_dirs["qwen3_vl"]),
                "--device",
                "cpu",
                "--n",
                "1",
                "--steps",
                "2",
                "--methods",
                "raw",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads(out.read_text())
    assert data["samples"] == 1 and {r["method"] for r in data["rows"]} == {"raw", "random", "centre"}
    assert "| method |" in capsys.readouterr().out
    # the seed, a Markdown table and a plot beside the JSON; every metric with n and an interval
    assert data["settings"]["seed"] is not None
    assert out.with_suffix(".md").read_text().startswith("| method |")
    from PIL import Image

    assert min(Image.open(out.with_suffix(".png")).size) > 200
    for row in data["rows"]:
        assert row["pointing"]["n"] == 1 and row["pointing"]["lo"] <= row["pointing"]["mean"] <= row["pointing"]["hi"]


def test_shapes_command_writes_csv_and_images(tmp_path, capsys):
    import csv

    assert main(["shapes", "--n", "4", "--out", str(tmp_path), "--seed", "3"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "questions.csv")))
    assert len(rows) == 4 and {"question_id", "image_id", "question", "answer"} <= set(rows[0])
    assert all((tmp_path / "images" / f"{r['image_id']}.png").is_file() for r in rows)
