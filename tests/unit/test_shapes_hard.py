"""The hard shapes split: smaller, more, fainter, possibly overlapping objects; the default split untouched."""

from __future__ import annotations

import numpy as np
import pytest

from vlmscope.data import shapes
from vlmscope.errors import VlmscopeError


def _contrast(scene: shapes.Scene) -> float:
    """Mean largest per-channel distance from the background over the objects' centre pixels."""
    px = np.asarray(scene.image).astype(int)
    d = [np.abs(px[int(o.centre[1]), int(o.centre[0])] - np.array(scene.background)).max() for o in scene.objects]
    return float(np.mean(d))


def test_hard_scenes_follow_their_difficulty():
    hard, easy = shapes.DIFFICULTIES["hard"], shapes.DIFFICULTIES["easy"]
    hard_scenes = [shapes.generate_scene(s, difficulty="hard") for s in range(40)]
    easy_scenes = [shapes.generate_scene(s) for s in range(40)]
    for sc in hard_scenes:
        assert hard.objects[0] <= len(sc.objects) <= hard.objects[1]
        for o in sc.objects:
            assert hard.min_size <= o.box[2] - o.box[0] <= hard.max_size
    assert np.mean([len(s.objects) for s in hard_scenes]) > np.mean([len(s.objects) for s in easy_scenes])
    # faded: the objects sit closer to the background colour than full-colour objects do
    assert np.mean([_contrast(s) for s in hard_scenes]) < 0.85 * np.mean([_contrast(s) for s in easy_scenes])
    assert max(easy.min_size, hard.max_size) == easy.min_size  # every hard object is smaller than any easy one


def test_hard_dataset_is_seeded_named_and_separate():
    a = shapes.make_dataset(6, seed=3, difficulty="hard")
    b = shapes.make_dataset(6, seed=3, difficulty="hard")
    easy = shapes.make_dataset(6, seed=3)
    assert [r.question for r in a] == [r.question for r in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert a[0].image_id == "shapes_hard_3_000000" and easy[0].image_id == "shapes_3_000000"
    assert not np.array_equal(np.asarray(a[0].image), np.asarray(easy[0].image))
    # the default is the easy split, unchanged by the option
    assert all(
        np.array_equal(np.asarray(x.image), np.asarray(y.image))
        for x, y in zip(easy, shapes.make_dataset(6, seed=3, difficulty="easy"))
    )


def test_hard_answers_follow_the_ground_truth():
    for r in shapes.make_dataset(25, seed=9, difficulty="hard"):
        objs = r.scene.objects
        if r.question_type == "count" and r.question == "How many shapes are there?":
            assert r.answer == shapes.COUNT_WORDS[len(objs)]
        if r.question_type == "colour_of_shape":
            (o,) = [o for o in objs if o.shape == r.question.rstrip("?").split()[-1]]
            assert r.answer == o.colour


def test_unknown_difficulty_is_a_clear_error():
    with pytest.raises(VlmscopeError, match="unknown difficulty 'brutal'.*easy, hard"):
        shapes.make_dataset(2, difficulty="brutal")
