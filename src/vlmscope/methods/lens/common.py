"""What every lens starts from: the residual stream of each vision token at chosen layers."""

from __future__ import annotations

import torch
from PIL import Image

from ...errors import VlmscopeError
from ...inputs import load_image
from ...specs import parse_layers


def layer_list(scope, layers) -> list[int]:
    """A layer spec resolved against the decoder (``all``, ``halp``, ``0,2``, ``-1``, ...)."""
    return parse_layers(layers, scope.adapter.num_layers)


def vision_states(scope, example, layers: list[int]):
    """({layer: [Nv, D] float32 on the CPU}, token map) for every vision token of `example`,
    in sequence order (raster order within each image), from one forward."""
    trace = scope.forward(example, "llm.layers", layers=layers, tokens="vision")
    tm = trace.token_maps[0]
    if not tm.visuals:
        raise VlmscopeError("the example has no image: a lens reads vision tokens, give images=[...]")
    return {i: trace[f"llm.layers.{i}"][0].float() for i in layers}, tm


def first_image(example) -> Image.Image | None:
    """The example's first image as RGB, for the page (None for a video-only example)."""
    if not example.images:
        return None
    return load_image(example.images[0])  # upright, as the model saw it


def module_device(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype
