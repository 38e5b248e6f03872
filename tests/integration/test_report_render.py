"""Reports stay small for any input image and render in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from vlmscope.cli import main

LIMIT = 5 * 1024 * 1024
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _photo(path, w: int = 4096, h: int = 4800) -> None:
    """A large photo-like image: smooth gradients plus noise (hard to compress)."""
    rng = np.random.default_rng(0)
    y, x = np.ogrid[0:h, 0:w]
    a = np.empty((h, w, 3), np.int16)
    a[..., 0], a[..., 1], a[..., 2] = x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)
    a += np.repeat(np.repeat(rng.integers(-40, 40, (h // 2, w // 2, 3), dtype=np.int16), 2, 0), 2, 1)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=92)


@pytest.fixture(scope="module")
def big_report(tmp_path_factory):
    """`vlmscope run` on a 4096 x 4800 photo with the bundled model: raw attention, masking (a
    signed map), the prompt's text and the lens view."""
    root = tmp_path_factory.mktemp("big")
    _photo(root / "photo.jpg")
    out = root / "run"
    assert (
        main(
            [
                "run",
                str(root / "photo.jpg"),
                "--prompt",
                "What colour is the square?",
                "--max-new-tokens",
                "3",
                "--methods",
                "raw,masking",
                "--text",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "report.html"


def _screenshot(page, png) -> np.ndarray:
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={png.parent / 'chromium-profile'}",
            "--window-size=1200,1600",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def test_report_of_a_large_photo_is_small(big_report):
    size = big_report.stat().st_size
    assert size < LIMIT, f"report is {size / 2**20:.1f} MiB"
    page = big_report.read_text()
    assert page.count("background-image: url(") == 1  # the photo embedded once, at display size
    assert "4096 x 4800" in page  # the token map still names the original size


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_of_a_large_photo_renders_in_chromium(big_report, tmp_path):
    shot = _screenshot(big_report, tmp_path / "shot.png")
    assert shot.shape[:2] == (1600, 1200)
    # not blank: the photo and its maps fill a large part of the window with many colours
    non_white = (shot < 235).any(-1)
    assert non_white.mean() > 0.15
    assert len(np.unique(shot.reshape(-1, 3)[non_white.ravel()], axis=0)) > 500


def test_tiny_qwen2_5_vl_with_a_large_token_grid_stays_small(tiny_dirs, tmp_path):
    """The map layers grow with the token grid, not the photo: ~1,000 tokens stay well under the limit."""
    _photo(tmp_path / "photo.jpg")
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                str(tmp_path / "photo.jpg"),
                "--prompt",
                "Describe.",
                "--model",
                str(tiny_dirs["qwen2_5_vl"]),
                "--device",
                "cpu",
                "--max-new-tokens",
                "4",
                "--methods",
                "raw,rollout",
                "--lens",
                "none",
                "--max-pixels",
                str(896 * 896),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    t, h, w = json.loads((out / "token_map.json").read_text())["visuals"][0]["merged_thw"]
    assert h * w > 800
    assert (out / "report.html").stat().st_size < LIMIT / 4


def test_clicking_a_map_and_switching_the_scale_update_the_detail(big_report, browser):
    page = browser.new_page()
    try:
        page.goto(big_report.as_uri())
        title = page.locator("#d-title")
        assert "method: raw" in title.inner_text() and "scale: per token" in title.inner_text()
        # the masking map of token 1: the detail shows that cell's layer and names it
        page.click("#c-1-1")
        assert "method: masking" in title.inner_text() and "token 1:" in title.inner_text()
        own = page.get_attribute("#t-1-1-0 img.s-token", "src")
        assert page.get_attribute("#d-0", "src") == own
        # shared scale: another layer, the colour bar's top value is the method's shared maximum
        page.check("input[name=scale][value=shared]")
        assert "scale: shared across tokens" in title.inner_text()
        assert page.get_attribute("#d-0", "src") == page.get_attribute("#t-1-1-0 img.s-shared", "src") != own
        data = json.loads(page.locator("#maps-data").inner_text())
        top = page.locator("#d-bar-0 .t-max").inner_text()
        assert float(top) == pytest.approx(data["shared"][1]["vmax"], rel=1e-2)
        assert page.locator("#t-1-1-0 img.s-token").is_hidden()
    finally:
        page.close()
