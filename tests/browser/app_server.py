"""Fixtures of the browser tests (imported by them; not a conftest.py, whose module name would
shadow tests/conftest.py's helpers): the app served on localhost in a thread (random free port)
with the bundled model and a tiny random Qwen2.5-VL that shares its tokenizer, driven by
headless Chromium through Playwright.

Skipped cleanly when Gradio, Playwright or a Chromium binary is missing."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("VLMSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium binary at {CHROMIUM}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    import vlmscope
    from vlmscope.app.compare import peer_model

    peer = peer_model(tmp_path_factory.mktemp("peer") / "qwen2_5_vl")
    return {"shapes": vlmscope.load(device="cpu"), "peer": vlmscope.load(peer, device="cpu")}


@pytest.fixture(scope="session")
def limits():
    from vlmscope.app.inputs import Limits

    return Limits(max_upload_mb=1.0, max_pixels=1_000_000)


@pytest.fixture(scope="session")
def app_url(models, limits):
    from vlmscope.app.ui import build, launch

    demo = build(models, limits)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, limits=limits, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(app_url)
    pg.wait_for_selector("#vs-generate")
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
