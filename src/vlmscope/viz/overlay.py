"""Per-vision-token values -> a heatmap over the original image, and the usual compositions.

Values are laid on the merged token grid of one image (raster order, as the TokenMap gives
them) and stretched over the pixels each token covers in the original image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..tokenmap import Visual, to_pixels  # noqa: F401 (to_pixels: re-exported for drawing code)


def token_grid(values, visual: Visual, frame: int = 0) -> np.ndarray:
    """[Nv] values of one visual -> [h, w] grid of temporal group `frame`."""
    t, h, w = visual.merged_thw
    arr = np.asarray(values, dtype=np.float32).reshape(t, h, w)
    return arr[frame]


def normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    return np.zeros_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def colorize(heat: np.ndarray, cmap: str = "jet") -> Image.Image:
    """A [H, W] array (any range) -> an RGB heatmap image."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](normalise(heat))
    return Image.fromarray((rgba[..., :3] * 255).astype(np.uint8))


def overlay(image: Image.Image, heat: np.ndarray, cmap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """Blend a heatmap of the image's own size over it."""
    return Image.blend(image.convert("RGB"), colorize(heat, cmap).resize(image.size), alpha)


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 4) -> Image.Image:
    out = Image.new("RGB", (left.width + right.width + gap, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


def grid(
    images: Sequence[Image.Image], titles: Sequence[str] | None = None, cols: int = 6, label_height: int = 14
) -> Image.Image:
    """Tile images (same size) with a caption line under each."""
    if not images:
        raise ValueError("no images to tile")
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    cols = min(cols, len(images))
    sheet = Image.new("RGB", (cols * w, rows * (h + label_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + label_height)
        sheet.paste(im.resize((w, h)), (x, y))
        if titles:
            draw.text((x + 2, y + h), str(titles[i])[:24], fill="black")
    return sheet
