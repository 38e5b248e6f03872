"""The app's pure parts without a browser: upload checks, map settings, maps from captured rows
(no model run, equal to the library's own), drawing, shared tokens, streaming and cancelling."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vlmscope
from vlmscope import Example, explain
from vlmscope.app.inputs import Limits, build_example, load_upload_image, load_upload_video, pad_frames, sample_frames
from vlmscope.app.maps import MapSettings, Run, capture_plan, grids, map_values, render, shared_tokens, token_maps
from vlmscope.app.session import Models
from vlmscope.app.stream import stream_answer
from vlmscope.app.tab import error_line
from vlmscope.errors import VlmscopeError

DEMO = Path(vlmscope.__file__).parent / "assets/examples/shapes_demo.png"
PROMPT = "What colour is the square?"


@pytest.fixture(scope="module")
def shapes():
    return vlmscope.load(device="cpu")


@pytest.fixture(scope="module")
def run(shapes):
    example, frames = build_example(PROMPT, [DEMO], None)
    *_, answer = stream_answer(shapes, example, capture_plan(shapes), 8)
    return Run("shapes", shapes, example, answer, frames)


def test_upload_checks(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(VlmscopeError, match="cannot read 'bad.png'"):
        load_upload_image(bad)
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    with pytest.raises(VlmscopeError, match="60000 pixels"):
        load_upload_image(big, Limits(max_pixels=50_000))
    with pytest.raises(VlmscopeError, match="MB"):
        load_upload_image(big, Limits(max_upload_mb=1e-4))
    assert load_upload_image(big).size == (300, 200)
    with pytest.raises(VlmscopeError, match="prompt"):
        build_example("  ", [big], None)
    with pytest.raises(VlmscopeError, match="upload an image or a video"):
        build_example("hi", [], None)
    with pytest.raises(VlmscopeError, match="at most 1"):
        build_example("hi", [big, big], None, Limits(max_images=1))
    with pytest.raises(VlmscopeError, match="PyAV|decode"):
        (tmp_path / "clip.mp4").write_bytes(b"\0" * 10)
        load_upload_video(tmp_path / "clip.mp4")


def test_video_frames_sampled_and_padded(tmp_path):
    assert sample_frames(3, 8) == [0, 1, 2]
    assert sample_frames(10, 4) == [0, 3, 6, 9]
    assert len(pad_frames([Image.new("RGB", (4, 4))] * 3, 2)) == 4
    gif = tmp_path / "a.gif"
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue", "white", "black")]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    got = load_upload_video(gif, Limits(max_frames=3))
    assert len(got) == 4  # 3 sampled (first, middle, last), padded to the temporal patch
    assert [im.getpixel((0, 0)) for im in got] == [(255, 0, 0), (0, 0, 255), (0, 0, 0), (0, 0, 0)]


def test_settings_ranges_are_checked(shapes):
    assert MapSettings(layers=(1, -1)).options(shapes)["layers"] == "1-3"
    with pytest.raises(VlmscopeError, match="selects nothing"):
        MapSettings(layers=(3, 1)).options(shapes)
    with pytest.raises(VlmscopeError, match="outside 0-3"):
        MapSettings(heads=(0, 9)).options(shapes)
    with pytest.raises(VlmscopeError, match="unknown map method"):
        MapSettings(method="nope").options(shapes)
    assert "heads" not in MapSettings(method="masking").options(shapes)


@pytest.mark.parametrize(
    "settings, library",
    [
        (MapSettings(), {}),
        (
            MapSettings(layers=(1, 2), heads=(0, 1), head_agg="max"),
            {"layers": "1-2", "heads": "0-1", "head_agg": "max"},
        ),
        (
            MapSettings(layers=(3, 3), layer_agg="min", exclude_sinks=True),
            {"layers": "3", "layer_agg": "min", "exclude_sinks": True},
        ),
    ],
)
def test_raw_maps_from_captured_rows_equal_the_library(run, shapes, settings, library, monkeypatch):
    ref = explain(shapes, Example(PROMPT, images=[str(DEMO)]), method="raw", max_new_tokens=8, **library)

    def no_model(*a, **k):
        raise AssertionError("the model ran")

    monkeypatch.setattr(shapes, "forward", no_model)
    monkeypatch.setattr(shapes, "generate", no_model)
    got = token_maps(run, settings)
    assert got.tokens == ref.tokens
    np.testing.assert_allclose(got.maps, ref.maps, rtol=1e-5, atol=1e-7)
    values = map_values(got, 0)
    np.testing.assert_allclose(values["visuals"][0]["values"], ref.visual_map(0, 0)[0], rtol=1e-5, atol=1e-7)


def test_render_shapes_and_views(run):
    maps = token_maps(run, MapSettings())
    ((image, grid),) = grids(maps, run, 0)
    assert grid.shape == (6, 6) and image.size == (192, 192)
    overlay = render(maps, run, 0, height=200)
    side = render(maps, run, 0, view="side by side", height=200)
    assert overlay.height == side.height == 200 and side.width > overlay.width
    assert not np.array_equal(
        np.asarray(render(maps, run, 0, height=200)), np.asarray(render(maps, run, 1, height=200))
    )
    with pytest.raises(VlmscopeError, match="out of range"):
        render(maps, run, 5)
    with pytest.raises(VlmscopeError, match="colormap"):
        render(maps, run, 0, cmap="nope")


def test_shared_tokens():
    answers = [["The", " red", " square", "<|im_end|>"], ["red", " Square", "!", "<|im_end|>"], ["square", "red"]]
    assert shared_tokens(answers, frozenset({"<|im_end|>"})) == [("red", [1, 0, 1]), ("square", [2, 1, 0])]
    assert shared_tokens([["a"], ["b"]]) == []


def test_stream_yields_text_then_answer_and_cancels(shapes):
    example, _ = build_example(PROMPT, [DEMO], None)
    items = list(stream_answer(shapes, example, None, 8))
    assert items[-1].text == items[-2] and all(isinstance(i, str) for i in items[:-1])
    cancel = threading.Event()
    cancel.set()  # already set: stream_answer clears it, so the answer is complete
    assert list(stream_answer(shapes, example, None, 8, cancel))[-1].text == items[-1].text


def test_cancel_stops_the_generate_and_keeps_the_rows(tmp_path):
    from vlmscope.models.tiny import build_tiny_model

    tiny = vlmscope.load(build_tiny_model("qwen2_vl", tmp_path / "tiny"), device="cpu")  # random: never stops early
    example = Example("Describe the image.", images=[Image.new("RGB", (56, 56), "red")])
    full = list(stream_answer(tiny, example, None, 64))[-1]
    assert len(full.ids) == 64
    cancel = threading.Event()
    gen = stream_answer(tiny, example, capture_plan(tiny), 64, cancel)
    next(gen)
    cancel.set()
    answer = list(gen)[-1]
    assert 1 <= len(answer.ids) < 64
    assert answer.ids == full.ids[: len(answer.ids)]
    assert answer.trace["llm.layers.0.attn"][0].shape[1] == len(answer.ids)


def test_models_and_error_lines(shapes):
    m = Models.of([shapes, shapes])
    assert len(m.names) == 2 and m.names[0] != m.names[1]
    with pytest.raises(VlmscopeError, match="unknown model"):
        m.get("other")
    line = error_line(RuntimeError("boom\n  at line 3\nTraceback"))
    assert "\n" not in line and "RuntimeError: boom" in line
    assert "&lt;b&gt;" in error_line(VlmscopeError("<b>"))
