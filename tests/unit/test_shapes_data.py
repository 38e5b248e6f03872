"""The shapes generator: deterministic, pixel-exact boxes, questions answerable from the truth."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from vlmscope.data import shapes


def _object_mask(scene: shapes.Scene, obj: shapes.ShapeObject) -> np.ndarray:
    """Pixels within colour jitter of `obj`'s colour."""
    px = np.asarray(scene.image).astype(int)
    return np.abs(px - np.array(shapes.COLOURS[obj.colour])).max(-1) <= 12


def _answer(scene: shapes.Scene, q: shapes.Question) -> str:
    """Answer `q` from the scene's ground truth alone, parsing the question text."""
    words = q.question.rstrip("?").split()
    objs = scene.objects
    if q.question_type == "colour_of_shape":
        (o,) = [o for o in objs if o.shape == words[-1]]
        return o.colour
    if q.question_type == "shape_of_colour":
        (o,) = [o for o in objs if o.colour == words[-2]]
        return o.shape
    if q.question_type == "position":
        (o,) = [o for o in objs if (o.colour, o.shape) == (words[2], words[3])]
        axis = 0 if "left" in words else 1
        first = o.centre[axis] < scene.image.size[0] / 2
        return ("left", "right", "top", "bottom")[2 * axis + (not first)]
    if q.question_type == "exists":
        return "yes" if any((o.colour, o.shape) == (words[-2], words[-1]) for o in objs) else "no"
    if words[2] == "shapes":
        return shapes.COUNT_WORDS[len(objs)]
    return shapes.COUNT_WORDS[sum(shapes.PLURALS[o.shape] == words[2] for o in objs)]


def test_same_seed_same_images_and_csv(tmp_path):
    a, b = shapes.make_dataset(12, seed=3), shapes.make_dataset(12, seed=3)
    assert [(r.question, r.answer, r.box) for r in a] == [(r.question, r.answer, r.box) for r in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    p1, p2 = shapes.export_vqa(12, tmp_path / "a", seed=3), shapes.export_vqa(12, tmp_path / "b", seed=3)
    assert p1.read_bytes() == p2.read_bytes()
    for png in (tmp_path / "a" / "images").iterdir():
        assert png.read_bytes() == (tmp_path / "b" / "images" / png.name).read_bytes()
    assert shapes.make_dataset(12, seed=4)[0].question_id == 0
    assert not np.array_equal(np.asarray(shapes.make_dataset(1, seed=4)[0].image), np.asarray(a[0].image))


def test_longer_dataset_extends_shorter():
    short, long = shapes.make_dataset(5, seed=1), shapes.make_dataset(9, seed=1)
    assert [r.question for r in short] == [r.question for r in long[:5]]


@pytest.mark.parametrize("seed", range(20))
def test_boxes_match_drawn_pixels(seed):
    scene = shapes.generate_scene(seed)
    assert 1 <= len(scene.objects) <= 4
    for obj in scene.objects:
        ys, xs = np.nonzero(_object_mask(scene, obj))
        x0, y0, x1, y1 = obj.box
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        # other objects of the same colour lie elsewhere; this object's pixels fill its box edges
        xs, ys = xs[inside], ys[inside]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    for i, a in enumerate(scene.objects):
        for b in scene.objects[i + 1 :]:
            assert not shapes._overlaps(a.box, b.box)


def test_occlusion_removes_the_object():
    scene = shapes.generate_scene(7, n_objects=3)
    obj = scene.objects[0]
    assert _object_mask(scene, obj)[obj.box[1] : obj.box[3], obj.box[0] : obj.box[2]].any()
    hidden = shapes.occlude(scene, obj.box)
    px = np.asarray(hidden)[obj.box[1] : obj.box[3], obj.box[0] : obj.box[2]]
    assert (px == np.array(scene.background)).all()
    bg = shapes.background_box(scene, obj.box, 0)
    assert bg is not None and bg[2] - bg[0] == obj.box[2] - obj.box[0]
    assert not any(shapes._overlaps(bg, o.box) for o in scene.objects)


@pytest.mark.parametrize("qtype", shapes.QUESTION_TYPES)
def test_every_question_type_answerable_from_truth(qtype):
    asked = 0
    for seed in range(60):
        scene = shapes.generate_scene(seed)
        q = shapes.ask(scene, qtype, seed)
        if q is None:
            continue
        asked += 1
        assert q.question in shapes.all_questions()
        assert q.answer in shapes.ANSWERS and " " not in q.answer
        assert _answer(scene, q) == q.answer
        if q.box is not None:
            assert q.box in [o.box for o in scene.objects]
    assert asked >= 30


def test_dataset_balances_types_and_answers():
    recs = shapes.make_dataset(250, seed=0)
    types = [r.question_type for r in recs]
    assert {t: types.count(t) for t in shapes.QUESTION_TYPES} == dict.fromkeys(shapes.QUESTION_TYPES, 50)
    yes = sum(r.answer == "yes" for r in recs if r.question_type == "exists")
    assert 15 <= yes <= 35


def test_export_writes_vqa_csv(tmp_path):
    path = shapes.export_vqa(10, tmp_path, seed=2)
    assert path == tmp_path / "questions.csv"
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == shapes.CSV_COLUMNS
    assert len(rows) == 10
    for row in rows:
        assert (tmp_path / "images" / f"{row['image_id']}.png").is_file()
        has_box = row["box_x0"] != ""
        assert all((row[f"box_{k}"] != "") == has_box for k in ("x0", "y0", "x1", "y1"))
        if row["question_type"] in ("colour_of_shape", "shape_of_colour", "position"):
            assert has_box
        if row["question_type"] == "count":
            assert not has_box


def _drawn(scene: shapes.Scene, objs) -> np.ndarray:
    """[H, W] bool: the pixels of `objs` as drawn."""
    from PIL import Image, ImageDraw

    mask = Image.new("1", scene.image.size)
    for o in objs:
        shapes.draw_object(ImageDraw.Draw(mask), o, 1)
    return np.array(mask, dtype=bool)


@pytest.mark.parametrize("difficulty", ["easy", "hard"])
def test_without_paints_one_object_over_with_the_background(difficulty):
    rng = np.random.default_rng(5)
    textures = set()
    for _ in range(30):
        scene = shapes.generate_scene(rng, difficulty=difficulty)
        textures.add(scene.texture)
        before = np.asarray(scene.image).astype(int)
        for i, obj in enumerate(scene.objects):
            after = np.asarray(scene.without(i)).astype(int)
            changed = np.abs(after - before).max(-1) > 0
            inside = np.zeros_like(changed)
            x0, y0, x1, y1 = obj.box
            inside[y0:y1, x0:x1] = True
            assert not changed[~inside].any(), "pixels outside the object's box changed"
            on_top = _drawn(scene, scene.objects[i + 1 :])  # objects drawn later keep their pixels
            assert not changed[on_top].any()
            gone = _drawn(scene, [obj]) & ~on_top
            assert changed[gone].mean() > 0.9  # the object's colour was painted over
            off_background = np.abs(after[gone] - np.array(scene.background)).max(-1)
            assert off_background.max() <= (0 if scene.texture == "flat" else 6)
    assert textures == set(shapes.TEXTURES)
