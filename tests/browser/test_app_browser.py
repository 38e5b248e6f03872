"""The app in headless Chromium: every map shown equals what the library computes for the same
settings in a separate run (`vlmscope.explain`), the picture shown is the drawing of those values,
sessions are isolated, bad uploads are one line, and comparison and video work end to end."""

from __future__ import annotations

import io

import numpy as np
import pytest
from app_server import app_url, artifacts, limits, models, page  # noqa: F401 (fixtures; skips without a browser)
from helpers import DEMO, DEMO_2, PROMPT, generate, grid, set_slider, status, upload, wait_json, wait_status
from PIL import Image

from vlmscope import Example, explain
from vlmscope.inputs import load_image


def reference(scope, prompt, images=(), videos=(), answer=None, **options):
    """The library's maps for the same input, from its own generate (or teacher-forced answer)."""
    ex = Example(prompt, images=[load_image(i) for i in images], videos=videos, answer=answer)
    return explain(scope, ex, method="raw", max_new_tokens=16, **options)


def test_generate_pick_token_change_layers(page, models, artifacts):
    shapes = models["shapes"]
    n = shapes.adapter.num_layers
    upload(page, DEMO)
    values = generate(page, PROMPT)
    ref = reference(shapes, PROMPT, [DEMO], layers=f"0-{n - 1}")
    assert page.locator("#vs-answer textarea").input_value() == ref.answer
    assert values["token"] == 0 and values["layers"] == list(range(n))
    np.testing.assert_allclose(grid(values), ref.visual_map(0, 0)[0], rtol=1e-5, atol=1e-7)

    # the picture on the page is the app's drawing of exactly these values
    from vlmscope.app.maps import Run, render
    from vlmscope.methods import Answer

    src = page.locator("#vs-map img").get_attribute("src")
    shown = Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")
    ex = Example(PROMPT, images=[load_image(DEMO)])
    run = Run("shapes", shapes, ex, Answer.resolve(shapes, ex, 16), [[load_image(DEMO)]])
    expected = render(ref, run, 0)
    assert shown.size == expected.size
    assert np.abs(np.asarray(shown, np.int16) - np.asarray(expected, np.int16)).max() <= 1

    # click the second token
    page.locator("#vs-tokens label").nth(1).click()
    values = wait_json(page, "vs-map-values", "v => JSON.parse(v).token === 1")
    np.testing.assert_allclose(grid(values), ref.visual_map(1, 0)[0], rtol=1e-5, atol=1e-7)

    # narrow the layer range: a new map, equal to the library's for layers 0-1, without a model run
    set_slider(page, "vs-layer-hi", 1)
    values = wait_json(page, "vs-map-values", "v => JSON.parse(v).layers.length === 2")
    narrow = reference(shapes, PROMPT, [DEMO], layers="0-1")
    np.testing.assert_allclose(grid(values), narrow.visual_map(1, 0)[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(grid(values), ref.visual_map(1, 0)[0], atol=1e-4)
    assert "ms" in page.locator("#vs-map-info").inner_text()

    # heads 1-2 with max over heads
    set_slider(page, "vs-head-lo", 1)
    set_slider(page, "vs-head-hi", 2)
    page.locator("#vs-head-agg label", has_text="max").click()
    values = wait_json(
        page, "vs-map-values", "v => { const j = JSON.parse(v); return j.head_agg === 'max' && j.heads.length === 2; }"
    )
    heads = reference(shapes, PROMPT, [DEMO], layers="0-1", heads="1-2", head_agg="max")
    np.testing.assert_allclose(grid(values), heads.visual_map(1, 0)[0], rtol=1e-5, atol=1e-7)

    # an empty range is one line, and the last good map stays
    set_slider(page, "vs-layer-lo", 3)
    line = wait_status(page, "selects nothing")
    assert "\n" not in line and "Traceback" not in page.content()
    page.screenshot(path=str(artifacts / "app-maps.png"), full_page=True)


def test_two_sessions_do_not_share_state(browser, app_url, models):
    pages = []
    for _ in range(2):
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(app_url)
        pg.wait_for_selector("#vs-generate")
        pages.append(pg)
    a, b = pages
    upload(a, DEMO)
    va = generate(a, PROMPT)
    upload(b, DEMO_2)
    vb = generate(b, "What shape is yellow?")
    ra = reference(models["shapes"], PROMPT, [DEMO])
    rb = reference(models["shapes"], "What shape is yellow?", [DEMO_2])
    assert a.locator("#vs-answer textarea").input_value() == ra.answer
    assert b.locator("#vs-answer textarea").input_value() == rb.answer
    np.testing.assert_allclose(grid(va), ra.visual_map(0, 0)[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grid(vb), rb.visual_map(0, 0)[0], rtol=1e-5, atol=1e-7)
    # session A redraws from its own run after B generated
    a.locator("#vs-tokens label").nth(1).click()
    va1 = wait_json(a, "vs-map-values", "v => JSON.parse(v).token === 1")
    np.testing.assert_allclose(grid(va1), ra.visual_map(1, 0)[0], rtol=1e-5, atol=1e-7)
    assert b.locator("#vs-answer textarea").input_value() == rb.answer
    for pg in pages:
        pg.context.close()


def test_bad_uploads_are_one_line_and_the_app_keeps_working(page, tmp_path, limits):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image at all")
    upload(page, broken)
    page.locator("#vs-prompt textarea").fill(PROMPT)
    page.locator("#vs-generate").click()
    line = wait_status(page, "cannot read")
    assert "broken.png" in line and "\n" not in line

    huge = tmp_path / "huge.png"
    Image.new("RGB", (1100, 1000), "white").save(huge)  # 1.1 M pixels, a few kB
    page.locator("#vs-images button[aria-label='Clear']").first.click()
    upload(page, huge)
    page.locator("#vs-generate").click()
    line = wait_status(page, "pixels")
    assert "huge.png" in line and str(limits.max_pixels) in line and "\n" not in line
    assert "Traceback" not in page.content()

    page.locator("#vs-images button[aria-label='Clear']").first.click()
    upload(page, DEMO)
    values = generate(page, PROMPT)
    assert values["token"] == 0 and grid(values).shape == (6, 6)


def test_compare_two_models(page, models, artifacts):
    upload(page, DEMO)
    page.locator("#vs-prompt textarea").fill(PROMPT)
    page.get_by_role("tab", name="Compare").click()
    page.locator("#vs-same input").check()
    page.locator("#vs-compare-run").click()
    comp = wait_json(page, "vs-compare-values")
    assert comp["models"] == ["shapes", "peer"]
    first = reference(models["shapes"], PROMPT, [DEMO])
    assert comp["answers"][0] == first.answer
    assert comp["rows"], "the same answer, teacher-forced, shares every word"
    peer = reference(models["peer"], PROMPT, [DEMO], answer=first.answer)
    for row in comp["rows"]:
        i, j = row["indices"]
        np.testing.assert_allclose(comp["maps"][row["token"]][0], first.maps[i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(comp["maps"][row["token"]][1], peer.maps[j], rtol=1e-5, atol=1e-7)
    # different grids (6x6 and 7x7), both drawn over the pixels in one row
    frame = page.frame_locator("#vs-compare iframe")
    assert frame.locator("tr.shared img").count() == 2 * len(comp["rows"])
    page.screenshot(path=str(artifacts / "app-compare.png"), full_page=True)


def test_video_frames(page, models, tmp_path, artifacts):
    from vlmscope.app.inputs import load_upload_video

    gif = tmp_path / "clip.gif"
    frames = [Image.open(p).convert("RGB") for p in (DEMO, DEMO_2, DEMO.with_name("shapes_demo_3.png"), DEMO)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200)
    upload(page, video=gif)
    values = generate(page, PROMPT)
    assert values["visuals"][0]["kind"] == "video"
    t = values["visuals"][0]["grid"][0]
    assert t == 2 and page.locator("#vs-frame").is_visible()
    decoded = load_upload_video(gif)
    ref = reference(models["shapes"], PROMPT, videos=[decoded])
    np.testing.assert_allclose(grid(values), ref.visual_map(0, 0)[0], rtol=1e-5, atol=1e-7)
    set_slider(page, "vs-frame", 1)
    values = wait_json(page, "vs-map-values", "v => JSON.parse(v).visuals[0].frame === 1")
    np.testing.assert_allclose(grid(values), ref.visual_map(0, 0)[1], rtol=1e-5, atol=1e-7)
    page.screenshot(path=str(artifacts / "app-video.png"), full_page=True)


@pytest.mark.parametrize("tab", ["Masking", "Lens"])
def test_masking_and_lens_tabs(page, tab, models):
    upload(page, DEMO)
    generate(page, PROMPT)
    page.get_by_role("tab", name=tab).click()
    if tab == "Masking":
        from vlmscope.methods.answer import Answer
        from vlmscope.methods.masking import mask_impact

        page.locator("#vs-mask-run").click()
        got = wait_json(page, "vs-mask-values")
        ex = Example(PROMPT, images=[load_image(DEMO)])
        ans = Answer.resolve(models["shapes"], ex, 16)
        ref = mask_impact(models["shapes"], ex, answer_ids=ans.ids, mode="both")
        np.testing.assert_allclose(got["vision"][0], ref.vision_map(0, 0), rtol=1e-4, atol=1e-6)
        assert [w for w, _ in got["text"]] == [u.label for u in ref.units if u.kind == "text"]
    else:
        page.locator("#vs-lens-run").click()
        page.wait_for_selector("#vs-lens-grid .vs-cell")
        assert page.locator("#vs-lens-grid .vs-cell").count() == 36
        before = page.locator("#vs-lens-grid .vs-lens-caption").inner_text()
        set_slider(page, "vs-lens-layer", 3)
        page.wait_for_function(
            "b => document.querySelector('#vs-lens-grid .vs-lens-caption').innerText !== b", arg=before
        )
    assert "⚠" not in status(page)


def test_exports(page, tmp_path, artifacts):
    upload(page, DEMO)
    generate(page, PROMPT)
    for button, name, magic in [
        ("png", "vlmscope-shapes-token0.png", b"\x89PNG"),
        ("pdf", "vlmscope-shapes-raw.pdf", b"%PDF"),
        ("html", "vlmscope-shapes-report.html", b"<!"),
    ]:
        page.locator(f"#vs-export-{button}").click()
        wait_status(page, f"exported {name}")
        page.wait_for_function(
            "s => document.querySelector('#vs-export')?.innerText.includes(s)", arg=name.rsplit(".", 1)[0]
        )
        body = page.request.get(page.locator("#vs-export a").first.get_attribute("href")).body()
        assert body.lstrip()[: len(magic)] == magic
    assert b"masking" in body  # the report has every method
    page.get_by_role("tab", name="Masking").click()
    page.locator("#vs-mask-run").click()
    wait_json(page, "vs-mask-values")
    page.screenshot(path=str(artifacts / "app-masking.png"), full_page=True)
    page.get_by_role("tab", name="Lens").click()
    page.locator("#vs-lens-run").click()
    page.wait_for_selector("#vs-lens-grid .vs-cell")
    page.screenshot(path=str(artifacts / "app-lens.png"), full_page=True)
