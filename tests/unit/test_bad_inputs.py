"""Inputs a dataset run meets in the wild: decompression bombs, 16-bit and float images,
non-UTF-8 tables, prompts longer than the model's context."""

from __future__ import annotations

import numpy as np
import pytest
from bad_files import png_header
from PIL import Image

from vlmscope import Example, VlmscopeError
from vlmscope.inputs import MAX_IMAGE_PIXELS, load_image


@pytest.mark.parametrize("side", [30000, 10000])  # past PIL's hard limit; past its warning only
def test_giant_image_is_one_line_error(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(side, side))
    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(VlmscopeError, match=r"bomb.png' is too large") as err:
        load_image(path)
    assert "\n" not in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value)


def test_image_within_the_limit_still_opens(tmp_path):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "ok.png")
    im = load_image(tmp_path / "ok.png")
    assert im.size == (40, 30) and im.getpixel((0, 0)) == (10, 20, 30)


def test_sixteen_bit_gradient_equals_its_eight_bit_twin(tmp_path, scopes):
    rng = np.random.default_rng(0)
    g16 = rng.integers(0, 65536, (48, 64), dtype=np.uint16)
    g16[0, :4] = [0, 128, 129, 65535]  # rounding edges: 128/257 -> 0, 129/257 -> 1
    Image.fromarray(g16).save(tmp_path / "g16.png")
    twin = np.floor(g16.astype(np.float64) / 257 + 0.5).astype(np.uint8)  # the naive 16 -> 8 bit map
    Image.fromarray(twin, "L").convert("RGB").save(tmp_path / "g8.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(load_image(tmp_path / "g16.png"))
    np.testing.assert_array_equal(got, np.asarray(Image.open(tmp_path / "g8.png")))
    assert got[0, :4, 0].tolist() == [0, 0, 1, 255]
    scope = scopes["qwen2_vl"]  # what the model sees is the same too
    a = scope.prepare(Example("What?", images=[tmp_path / "g16.png"]))
    b = scope.prepare(Example("What?", images=[tmp_path / "g8.png"]))
    np.testing.assert_array_equal(a.inputs["pixel_values"].numpy(), b.inputs["pixel_values"].numpy())


def test_float_images_in_unit_range_scale_and_others_are_refused(tmp_path):
    f = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    got = np.asarray(load_image(Image.fromarray(f, "F")))[..., 0]
    np.testing.assert_array_equal(got, np.floor(f.astype(np.float64) * 255 + 0.5).astype(np.uint8))
    Image.fromarray(f * 1000, "F").save(tmp_path / "depth.tif")
    with pytest.raises(VlmscopeError, match=r"depth.tif' has 'F' pixels in \[0, 1000\].*\[0, 1\]"):
        load_image(tmp_path / "depth.tif")
