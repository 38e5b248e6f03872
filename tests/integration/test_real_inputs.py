"""Inputs a real dataset holds, end to end through the command line: a phone photo stored sideways
with an EXIF tag must give the upright image's answer, report and stored features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

import vlmscope
import vlmscope.store
from vlmscope.cli import main

IMG = Path(vlmscope.__file__).parent / "assets" / "examples" / "shapes_demo.png"
QUESTION = "Is the red square at the top or the bottom?"


def phone_photos(folder: Path) -> tuple[Path, Path]:
    """The demo scene as an upright JPEG and as a phone stores it when held upright: the pixels a
    quarter turn counter-clockwise, tagged Orientation=6 ("turn clockwise to show")."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(IMG) as im:
        scene = im.convert("RGB")
    upright, sideways = folder / "upright.jpg", folder / "sideways.jpg"
    scene.save(upright, quality=100, subsampling=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    scene.transpose(Image.Transpose.ROTATE_90).save(sideways, quality=100, subsampling=0, exif=exif)
    return upright, sideways


def test_run_on_a_sideways_phone_photo_answers_as_the_upright_one(tmp_path, capsys):
    upright, sideways = phone_photos(tmp_path / "photos")
    answers = {}
    for path in (upright, sideways):
        args = ["run", str(path), "--prompt", QUESTION, "--methods", "raw", "--max-new-tokens", "2"]
        assert main([*args, "--out", str(tmp_path / path.stem), "--no-progress"]) == 0
        answers[path.stem] = capsys.readouterr().out.splitlines()[0]
    assert answers == {"upright": "top", "sideways": "top"}
    report = (tmp_path / "sideways" / "report.html").read_text()
    assert (
        "turned upright: EXIF orientation 6" in report
        and "turned upright" not in (tmp_path / "upright" / "report.html").read_text()
    )


def test_extract_stores_the_upright_features_of_a_sideways_photo(tmp_path):
    upright, sideways = phone_photos(tmp_path / "images")
    source = tmp_path / "questions.csv"
    with source.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question_id", "image", "question", "answer"])
        w.writerow(["a", upright.name, QUESTION, "top"])
        w.writerow(["b", sideways.name, QUESTION, "top"])
    out = tmp_path / "store"
    assert main(["extract", str(source), "--out", str(out), "--preset", "halp", "--no-progress"]) == 0
    with vlmscope.store.open(out) as store:
        vf = np.stack(list(store[next(n for n in store.columns if n.startswith("vf"))]))
        table = store.samples()
    answers = [str(a) for a in table["generated_answer"]]
    maps = [json.loads(m) for m in table["token_map"]]
    assert np.abs(vf[1] - vf[0]).max() < 0.01 * np.abs(vf[0]).max()  # equal up to the JPEG's rounding
    assert answers == ["top", "top"]  # read without its tag, the sideways photo is answered "bottom"
    assert [m["visuals"][0]["exif_orientation"] for m in maps] == [1, 6]
