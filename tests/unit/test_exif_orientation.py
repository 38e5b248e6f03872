"""Phone photos are stored sideways with an EXIF Orientation tag: every path that opens an image
must turn it upright, so the model, the maps and the token boxes see what every viewer shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmscope
from vlmscope import Example, explain
from vlmscope.inputs import load_image

EXAMPLES = Path(vlmscope.__file__).parent / "assets" / "examples"
QUESTION = "Is the red square at the top or the bottom?"  # shapes_demo.png: the red square is at the top

# How a viewer turns the stored pixels for display, from the EXIF specification's definition of
# each value (row 0 / column 0 of the stored image is the displayed image's ...):
DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: np.rot90(a, 2),  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: np.rot90(a[:, ::-1], 1),  # mirrored, then turned a quarter counter-clockwise
    6: lambda a: np.rot90(a, -1),  # turned a quarter clockwise (a phone held upright)
    7: lambda a: np.rot90(a[:, ::-1], -1),  # mirrored, then turned a quarter clockwise
    8: lambda a: np.rot90(a, 1),  # turned a quarter counter-clockwise
}


def stored_as(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for `upright` when it writes `orientation`: found by search over
    the eight symmetries of the rectangle, so the test does not restate the transform it checks."""
    candidates = [np.rot90(a, k) for a in (upright, upright[:, ::-1]) for k in range(4)]
    found = [c for c in candidates if DISPLAY[orientation](c).shape == upright.shape]
    found = [c for c in found if np.array_equal(DISPLAY[orientation](c), upright)]
    assert found, orientation
    return np.ascontiguousarray(found[0])


def save_tagged(pixels: np.ndarray, path: Path, orientation: int, **kw) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **kw)
    return path


@pytest.fixture(scope="module")
def upright() -> np.ndarray:
    with Image.open(EXAMPLES / "shapes_demo.png") as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_turns_every_orientation_upright(tmp_path, upright, orientation):
    # a non-square crop, so that a quarter turn is visible in the size too
    scene = upright[:, :150]
    path = save_tagged(stored_as(scene, orientation), tmp_path / "photo.png", orientation)
    image = load_image(path)
    assert np.array_equal(np.asarray(image), scene)
    assert image.info.get("vlmscope_exif_orientation", 1) == orientation
    with Image.open(path) as im:  # a PIL image handed over as it was opened is turned the same way
        assert np.array_equal(np.asarray(load_image(im)), scene)


@pytest.fixture(scope="module")
def bundled():
    return vlmscope.load(device="cpu")


def test_answer_map_and_box_of_a_tagged_jpeg_equal_the_upright_image(tmp_path, upright, bundled):
    """The bundled model's answer to a position question, the raw map's strongest token and its
    pixel box, for a JPEG stored in each orientation with its tag, equal the upright image's."""

    def run(path):
        maps = explain(bundled, Example(QUESTION, images=[str(path)]), method="raw", max_new_tokens=2)
        visual = maps.token_map.visuals[0]
        strongest = int(maps.maps[0].argmax())
        return maps, visual, visual.token_boxes()[strongest]

    jpeg = {"quality": 100, "subsampling": 0}
    base, base_visual, base_box = run(save_tagged(upright, tmp_path / "upright.jpg", 1, **jpeg))
    assert base.answer == "top" and base_visual.orientation == 1
    ignored = []
    for orientation in range(2, 9):
        path = save_tagged(stored_as(upright, orientation), tmp_path / f"o{orientation}.jpg", orientation, **jpeg)
        maps, visual, box = run(path)
        assert maps.answer == base.answer, orientation
        np.testing.assert_array_equal(box, base_box, err_msg=f"orientation {orientation}")
        assert np.abs(maps.maps[0] - base.maps[0]).max() < 0.05 * base.maps[0].max(), orientation
        assert maps.images[0].size == base.images[0].size  # the report draws the upright picture
        assert visual.orientation == orientation
        assert maps.token_map.summary()["visuals"][0]["exif_orientation"] == orientation
        with Image.open(path) as im:  # what the model would have seen had the tag been ignored
            untagged = Image.fromarray(np.asarray(im.convert("RGB")))
        raw = bundled.generate(Example(QUESTION, images=[untagged]), max_new_tokens=2)
        ignored.append(raw.generated_text[0])
    assert "bottom" in ignored  # the tag decides the answer: this test can fail


def test_an_app_upload_is_turned_upright_and_its_tag_recorded(tmp_path, upright):
    from vlmscope.app.inputs import load_upload_image

    path = save_tagged(stored_as(upright, 8), tmp_path / "upload.jpg", 8, quality=100, subsampling=0)
    image = load_upload_image(path)
    assert image.size == (upright.shape[1], upright.shape[0])
    assert np.abs(np.asarray(image, dtype=int) - upright).mean() < 2
    assert load_image(image).info["vlmscope_exif_orientation"] == 8
