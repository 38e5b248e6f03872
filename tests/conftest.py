"""Tiny random models of every family, built once per test session and loaded through the
same `from_pretrained` path real checkpoints take."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmscope.models.registry import FAMILIES as _REGISTRY

FAMILIES = list(_REGISTRY)  # every registered family gets the whole tiny-model suite


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    from vlmscope.models.tiny import build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    root = tmp_path_factory.mktemp("tiny-models")
    return {fam: build_tiny_model(fam, root / fam, tokenizer=tok, seed=i) for i, fam in enumerate(FAMILIES)}


@pytest.fixture(scope="session")
def scopes(tiny_dirs):
    import vlmscope

    return {fam: vlmscope.load(path, device="cpu", dtype="float32") for fam, path in tiny_dirs.items()}


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def random_image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def images():
    return [random_image(64, 96, 1), random_image(120, 60, 2), random_image(56, 56, 3)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test process, shared by every browser test: Playwright's sync API
    allows one running instance per thread. Skipped when Playwright or Chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("VLMSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"no Chromium binary at {chromium}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        yield b
        b.close()
