"""Tiny random models of every family, built once per test session and loaded through the
same `from_pretrained` path real checkpoints take."""

from __future__ import annotations

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
