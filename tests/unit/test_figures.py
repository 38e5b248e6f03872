"""Figures that do not lie about colour or scale: checked on pixel values, not on files existing."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from vlmscope.errors import VlmscopeError
from vlmscope.viz.overlay import (
    MAX_SIDE,
    colorbar_image,
    display_size,
    draw_map,
    map_scale,
    outline_masks,
    top_cells,
)
from vlmscope.viz.page import layer_image, palette, render


def _scene(w: int = 240, h: int = 180) -> Image.Image:
    """Orange, green and red blocks on an off-white background: the colours the issue names."""
    a = np.full((h, w, 3), (244, 242, 232), np.uint8)
    a[: h // 3, : w // 3] = (246, 135, 30)  # orange
    a[: h // 3, w // 3 : 2 * w // 3] = (40, 170, 60)  # green
    a[h // 3 :, 2 * w // 3 :] = (215, 30, 40)  # red
    return Image.fromarray(a)


def _cells(img: Image.Image, gh: int, gw: int):
    """Slices of each grid cell's interior (2 px margin), as draw_map maps cells to pixels."""
    w, h = img.size
    for r in range(gh):
        for c in range(gw):
            y0, y1 = -(-r * h // gh) + 2, -(-(r + 1) * h // gh) - 2
            x0, x1 = -(-c * w // gw) + 2, -(-(c + 1) * w // gw) - 2
            yield r, c, (slice(y0, y1), slice(x0, x1))


def test_low_values_leave_the_image_untouched_and_colour_follows_the_value():
    img = _scene()
    grid = np.zeros((3, 4), np.float32)
    grid[2, 3] = 1.0  # one hot cell on the red object
    grid[0, 0] = 0.5  # half the top value on the orange object
    out = np.asarray(draw_map(img, grid, alpha=0.8, outline=0))
    src = np.asarray(img)
    assert out.shape == src.shape
    for r, c, sl in _cells(img, 3, 4):
        if grid[r, c] == 0:  # zero: exactly the image's own pixels (orange stays orange, green stays green)
            assert np.array_equal(out[sl], src[sl]), (r, c)
    # the hot cell: inferno's top colour at opacity 0.8 over the red object, to rounding
    top = np.array(colormaps["inferno"](1.0)[:3]) * 255
    r, c, sl = next(x for x in _cells(img, 3, 4) if x[:2] == (2, 3))
    expected = 0.8 * top + 0.2 * src[sl].astype(float)
    assert np.abs(out[sl].astype(float) - expected).max() <= 1.5
    # half the value: half the opacity, inferno's middle colour
    mid = np.array(colormaps["inferno"](0.5)[:3]) * 255
    r, c, sl = next(x for x in _cells(img, 3, 4) if x[:2] == (0, 0))
    expected = 0.4 * mid + 0.6 * src[sl].astype(float)
    assert np.abs(out[sl].astype(float) - expected).max() <= 1.5


def test_outline_marks_the_top_cells_in_white_and_black_even_on_red():
    img = _scene()
    grid = np.zeros((3, 4), np.float32)
    grid[2, 3], grid[1, 3] = 1.0, 0.9  # two hot cells on the red object
    out = np.asarray(draw_map(img, grid, outline=2))
    white, black = outline_masks(grid, img.size, 2)
    assert white.any() and black.any()
    assert (out[white] == 255).all() and (out[black] == 0).all()
    # the outline surrounds exactly the two hot cells (rows 1-2, column 3 of the grid)
    ys, xs = np.nonzero(white | black)
    w, h = img.size
    assert xs.min() == 3 * w // 4 and xs.max() == w - 1 and ys.min() == h // 3 and ys.max() == h - 1
    # a flat floor is never "top", nor a cell that is faint on the scale shown
    assert not top_cells(np.full((3, 3), 0.2), 0.5).any()
    faint = np.zeros((3, 3), np.float32)
    faint[1, 1] = 0.1
    assert top_cells(faint, 1)[1, 1] and not top_cells(faint, 1, map_scale(faint, "shared", 0, 1)).any()


def test_scales_per_token_and_shared_differ_and_are_named():
    img = _scene()
    small = np.zeros((3, 4), np.float32)
    small[0, 1] = 0.1
    own = np.asarray(draw_map(img, small, outline=0))
    shared = np.asarray(draw_map(img, small, scale="shared", vmin=0, vmax=1.0, outline=0))
    r, c, sl = next(x for x in _cells(img, 3, 4) if x[:2] == (0, 1))
    src = np.asarray(img)[sl].astype(float)
    # per token, 0.1 is the top of its own scale; shared with a token reaching 1.0 it is faint
    assert np.abs(own[sl] - src).mean() > 4 * np.abs(shared[sl] - src).mean() > 0
    assert map_scale(small).label == "scale: per token"
    assert map_scale(small, "shared", 0, 1).label == "scale: shared across tokens"
    with pytest.raises(VlmscopeError, match="vmin and vmax"):
        draw_map(img, small, scale="shared")
    with pytest.raises(VlmscopeError, match="unknown map scale"):
        map_scale(small, "global")
    with pytest.raises(VlmscopeError, match="colormap"):
        draw_map(img, small, cmap="nope")


def test_signed_maps_are_symmetric_and_zero_stays_transparent():
    s = map_scale(np.array([-0.5, 0.0, 2.0]))
    assert s.signed and (s.vmin, s.vmax) == (-2.0, 2.0)
    assert s.strength(np.array([0.0]))[0] == 0 and s.strength(np.array([-2.0]))[0] == 1
    rgb, a = palette(s)
    assert a[0] == a[-3] == round(0.75 * 255) and a[126] < 3  # the ends opaque, the middle clear


def test_colour_bar_shows_the_ramp_from_clear_to_the_top_colour():
    s = map_scale(np.array([0.0, 0.37]))
    bar = np.asarray(colorbar_image(s, 200))
    edge = np.nonzero((bar[:, 1] == 0).all(-1))[0]  # the bar's black frame, left side
    strip = bar[edge.min() + 1 : edge.max(), 5].astype(float)  # a column inside the bar, top = vmax
    top = 0.75 * np.array(colormaps["inferno"](1.0)[:3]) * 255 + 0.25 * 255
    assert np.abs(strip[0] - top).max() <= 3
    assert np.abs(strip[-1] - 255).max() <= 3  # the bottom (0) is white: the image untouched
    # text (the real values) is drawn right of the bar
    assert (bar[:, 30:] < 128).any()
    with_bar = draw_map(_scene(), np.eye(3, 4), colorbar=True)
    assert with_bar.width > _scene().width and with_bar.height == _scene().height


def test_maps_are_drawn_at_display_size_whatever_the_photo():
    big = Image.new("RGB", (4096, 4800), (120, 130, 140))
    out = draw_map(big, np.random.default_rng(0).random((20, 17)), colorbar=True)
    assert max(out.size) <= MAX_SIDE + 200 and out.height == MAX_SIDE
    assert display_size((4096, 4800)) == (874, 1024) and display_size((100, 50)) == (100, 50)


def test_html_layer_pixels_match_the_drawn_map():
    """The page's palette layer, composited over the same base, gives draw_map's pixels."""
    img = _scene(240, 180)
    grid = np.random.default_rng(1).random((3, 4)).astype(np.float32)
    s = map_scale(grid)
    layer = layer_image(grid, s, outline=0).convert("RGBA").resize(img.size, Image.Resampling.NEAREST)
    composed = np.asarray(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")).astype(int)
    drawn = np.asarray(draw_map(img, grid, scale=s, outline=0)).astype(int)
    for _, _, sl in _cells(img, 3, 4):  # 254 colour levels: within a level's step of each other
        assert np.abs(composed[sl] - drawn[sl]).max() <= 3


def test_page_templates_escape_and_unknown_template_is_one_line():
    html = render("base.html.j2", title="<script>alert(1)</script>")  # autoescape is on
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    with pytest.raises(VlmscopeError, match="unknown page template"):
        render("nope.html.j2")


def test_text_importance_png_keeps_long_labels(tmp_path):
    from vlmscope.viz.masking import _matrix_png

    rows = ["a-rather-long-prompt-word-number-" + str(i) for i in range(3)]
    cols = ["'<|im_end|>'", "'answer'"]
    path = tmp_path / "t.png"
    _matrix_png(np.array([[1.0, -1.0], [0.5, 0.0], [0.0, 0.2]]), rows, cols, "drop", path)
    img = np.asarray(Image.open(path).convert("L"))
    # dark pixels (text) never touch the left or bottom edge: nothing was cut off
    assert (img[:, :2] > 200).all() and (img[-2:, :] > 200).all()
    assert img.shape[1] > 300  # room was made for the labels


def test_data_uri_picks_jpeg_for_photos_and_png_for_flat_images():
    from vlmscope.viz.page import data_uri

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 1500, 3), np.uint8))
    uri = data_uri(noise)
    assert uri.startswith("data:image/jpeg")
    shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(shown.size) == MAX_SIDE
    assert data_uri(_scene()).startswith("data:image/png")
