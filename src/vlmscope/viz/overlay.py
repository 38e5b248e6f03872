"""Per-vision-token values -> a map drawn over the image at display resolution.

Every picture of a map in vlmscope (PNG files, PDF pages, HTML reports, the app) is drawn here,
so they agree on three things that keep a figure honest on a model that answers colour questions:

- a perceptually uniform colormap whose opacity grows with the value: low values leave the
  image's own pixels untouched, so an orange object stays orange where the map is low;
- an outline of the top cells, visible on any colour (hot cells on a red object stay findable);
- an explicit scale (`MapScale`): per token, or shared across tokens (the only way to compare
  ``<|im_end|>`` with the answer word), shown with its real values in a colour bar.

Values are laid on the merged token grid of one image (raster order, as the TokenMap gives
them); the grid covers the whole image, so cell (r, c) of an [h, w] grid is drawn over rows
``[r*H/h, (r+1)*H/h)`` and columns ``[c*W/w, (c+1)*W/w)`` of the displayed image. Nothing is ever
drawn at the original resolution: images are first fitted to `MAX_SIDE` (long side, in pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import VlmscopeError
from ..tokenmap import Visual, to_pixels  # noqa: F401 (to_pixels: re-exported for drawing code)

MAX_SIDE = 1024  # px: the long side of every drawn map
DEFAULT_CMAP = "inferno"  # perceptually uniform, sequential (values >= 0)
SIGNED_CMAP = "RdBu_r"  # diverging, lightness symmetric around 0 (maps with negative values: masking)
SCALES = ("token", "shared")


def token_grid(values, visual: Visual, frame: int = 0) -> np.ndarray:
    """[Nv] values of one visual -> [h, w] grid of temporal group `frame`."""
    t, h, w = visual.merged_thw
    arr = np.asarray(values, dtype=np.float32).reshape(t, h, w)
    return arr[frame]


def display_size(size: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(W, H) scaled down (never up) so that the long side is at most `max_side`."""
    w, h = size
    f = min(1.0, max_side / max(w, h))
    return max(1, round(w * f)), max(1, round(h * f))


def fit(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """An RGB copy of `image` at display size (long side <= `max_side`)."""
    image = image.convert("RGB")
    size = display_size(image.size, max_side)
    if size == image.size:
        return image.copy()
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


@dataclass(frozen=True)
class MapScale:
    """How values become colours and opacity. ``kind``: 'token' (this map's own range) or
    'shared' (one range for every map it is given to). ``signed`` maps use a diverging colormap
    symmetric around zero, with opacity growing with |value|."""

    vmin: float
    vmax: float
    kind: str = "token"
    signed: bool = False

    @property
    def label(self) -> str:
        return "scale: per token" if self.kind == "token" else "scale: shared across tokens"

    def strength(self, values: np.ndarray) -> np.ndarray:
        """Opacity fraction in [0, 1]: 0 at zero (or vmin), 1 at the extreme of the scale."""
        v = np.nan_to_num(np.asarray(values, dtype=np.float32))
        if self.signed:
            m = max(abs(self.vmin), abs(self.vmax))
            return np.clip(np.abs(v) / m, 0, 1) if m > 0 else np.zeros_like(v)
        span = self.vmax - self.vmin
        return np.clip((v - self.vmin) / span, 0, 1) if span > 0 else np.zeros_like(v)

    def position(self, values: np.ndarray) -> np.ndarray:
        """Where each value sits on the colormap, in [0, 1]."""
        v = np.nan_to_num(np.asarray(values, dtype=np.float32))
        if self.signed:
            m = max(abs(self.vmin), abs(self.vmax)) or 1.0
            return np.clip((v / m + 1) / 2, 0, 1)
        return self.strength(v)

    def default_cmap(self) -> str:
        return SIGNED_CMAP if self.signed else DEFAULT_CMAP


def map_scale(values, scale: str = "token", vmin: float | None = None, vmax: float | None = None) -> MapScale:
    """The scale of one map (`scale='token'`) or of several (`'shared'`: pass every map's values,
    or give vmin and vmax). Non-negative values are anchored at 0, so a cell's opacity is
    proportional to its value; values of both signs get a symmetric scale around 0."""
    if scale not in SCALES:
        raise VlmscopeError(f"unknown map scale {scale!r}; choose from {', '.join(SCALES)}")
    if (vmin is None) != (vmax is None):
        raise VlmscopeError("give both vmin and vmax, or neither")
    if vmin is not None and vmax is not None:
        if not vmax > vmin:
            raise VlmscopeError(f"vmax ({vmax}) must be greater than vmin ({vmin})")
        return MapScale(float(vmin), float(vmax), scale, vmin < 0 < vmax)
    v = np.asarray(values, dtype=np.float32)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if lo < 0:
        m = max(-lo, hi)
        return MapScale(-m, m, scale, True)
    return MapScale(0.0, hi, scale, False)


def _cmap(name: str | None, scale: MapScale):
    from matplotlib import colormaps

    name = name or scale.default_cmap()
    if name not in colormaps:
        raise VlmscopeError(f"unknown colormap {name!r}; e.g. inferno, viridis, magma, cividis, RdBu_r")
    return colormaps[name]


def top_cells(grid: np.ndarray, outline: float | int, scale: MapScale | None = None) -> np.ndarray:
    """[h, w] bool: the cells to outline. `outline` < 1 is a fraction of the cells, >= 1 a count.
    Only cells above zero and above the map's median are outlined (a flat floor is not "top"),
    and, given the `scale` the map is shown on, only cells at least a quarter of the way up it
    (a map that is faint on a shared scale gets no outline claiming otherwise)."""
    v = np.nan_to_num(np.asarray(grid, dtype=np.float32))
    if scale is not None:
        v = np.where(scale.strength(v) >= 0.25, v, 0.0)
    k = int(round(outline * v.size)) if outline < 1 else int(outline)
    k = max(1, min(k, v.size)) if outline > 0 else 0
    mask = np.zeros(v.shape, bool)
    if k:
        idx = np.argsort(-v, axis=None, kind="stable")[:k]
        mask.flat[idx] = True
    return mask & (v > 0) & (v > np.median(v))


def _cell_index(n_cells: int, n_px: int) -> np.ndarray:
    return (np.arange(n_px) * n_cells) // n_px


def map_rgba(
    grid,
    size: tuple[int, int],
    scale: MapScale | None = None,
    cmap: str | None = None,
    alpha: float = 0.75,
    outline: float | int = 0.1,
) -> Image.Image:
    """The map alone as an RGBA layer of `size` = (W, H): colour from `cmap` at the value's place
    on `scale`, opacity ``alpha * strength`` (0 where the value is 0), and a two-tone (white over
    black) outline around the top cells. Composite it over the image at the same size."""
    g = np.nan_to_num(np.asarray(grid, dtype=np.float32))
    if g.ndim != 2:
        raise VlmscopeError(f"a map to draw is an [h, w] grid, got shape {tuple(g.shape)}")
    scale = scale or map_scale(g)
    w, h = size
    rows, cols = _cell_index(g.shape[0], h), _cell_index(g.shape[1], w)
    rgba = _cmap(cmap, scale)(scale.position(g)).astype(np.float32)  # [gh, gw, 4]
    rgba[..., 3] = alpha * scale.strength(g)
    px = (rgba[rows][:, cols] * 255).round().astype(np.uint8)
    white, black = outline_masks(g, size, outline, scale)
    px[white] = (255, 255, 255, 255)
    px[black] = (0, 0, 0, 255)
    return Image.fromarray(px, "RGBA")


def outline_masks(
    grid: np.ndarray, size: tuple[int, int], outline: float | int, scale: MapScale | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] bool masks of the outline's white (outer) and black (inner) line around `top_cells`
    at `size` = (W, H); each line is about 1/400 of the long side thick (at least 1 px)."""
    w, h = size
    if not outline:
        empty = np.zeros((h, w), bool)
        return empty, empty
    sel = top_cells(grid, outline, scale)[_cell_index(grid.shape[0], h)][:, _cell_index(grid.shape[1], w)]
    lw = max(1, round(max(w, h) / 400))
    inner = _erode(sel, lw)
    return sel & ~inner, inner & ~_erode(inner, lw)


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion by a (2r+1) square, with the image border counting as outside."""
    out = mask.copy()
    for _ in range(r):
        m = np.pad(out, 1, constant_values=False)
        out = out & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def colorbar_image(
    scale: MapScale, height: int, cmap: str | None = None, alpha: float = 0.75, width: int = 18
) -> Image.Image:
    """A vertical colour bar of `height` px: the colours a value takes over a white background
    (same opacity ramp as the map), with the real values of the scale written beside it."""
    fs = max(10, height // 32)
    font = _font(fs)
    labels = [scale.vmax, (scale.vmin + scale.vmax) / 2, scale.vmin]
    text_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(_fmt(v), font=font)) for v in labels)
    pad = fs
    bar_h = max(8, height - 2 * pad)
    out = Image.new("RGB", (width + text_w + 14, height), "white")
    values = np.linspace(scale.vmax, scale.vmin, bar_h, dtype=np.float32)[:, None]
    layer = map_rgba(values, (width, bar_h), scale, cmap, alpha, outline=0)
    bar = Image.alpha_composite(Image.new("RGBA", layer.size, "white"), layer).convert("RGB")
    out.paste(bar, (2, pad))
    draw = ImageDraw.Draw(out)
    draw.rectangle((1, pad - 1, width + 2, pad + bar_h), outline="black")
    for v, y in zip(labels, (pad, pad + bar_h // 2, pad + bar_h - 1)):
        draw.line((width + 2, y, width + 6, y), fill="black")
        draw.text((width + 8, y), _fmt(v), fill="black", font=font, anchor="lm")
    return out


def draw_map(
    image: Image.Image,
    grid,
    *,
    cmap: str | None = None,
    alpha: float = 0.75,
    scale: str | MapScale = "token",
    vmin: float | None = None,
    vmax: float | None = None,
    outline: float | int = 0.1,
    colorbar: bool = False,
    max_side: int = MAX_SIDE,
) -> Image.Image:
    """One map over one image, as an RGB PIL image at display resolution (long side <= `max_side`).

    `grid`: [h, w] values on the image's token grid (``token_grid(maps[j], visual)``, or
    ``TokenMaps.visual_map(j, k)[frame]``). `scale`: 'token' (this map's own range), 'shared'
    (give `vmin` and `vmax`, e.g. from ``map_scale(all_maps, 'shared')``) or a `MapScale`.
    `cmap`: default inferno (RdBu_r for signed maps). `alpha`: opacity at the top of the scale.
    `outline`: fraction (< 1) or number of top cells to outline; 0 for none. `colorbar`: append
    a colour bar with the scale's real values on the right.
    """
    if not 0 <= alpha <= 1:
        raise VlmscopeError(f"alpha must be in [0, 1], got {alpha}")
    g = np.asarray(grid, dtype=np.float32)
    if isinstance(scale, str):
        if scale == "shared" and vmin is None:
            raise VlmscopeError("scale='shared' needs vmin and vmax (see map_scale(maps, 'shared'))")
        scale = map_scale(g, scale, vmin, vmax)
    base = fit(image, max_side)
    layer = map_rgba(g, base.size, scale, cmap, alpha, outline)
    out = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    return side_by_side(out, colorbar_image(scale, out.height, cmap, alpha)) if colorbar else out


def strip(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """Images in one row, top-aligned, `gap` white pixels apart."""
    out = Image.new(
        "RGB", (sum(im.width for im in images) + gap * (len(images) - 1), max(im.height for im in images)), "white"
    )
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 4) -> Image.Image:
    return strip([left, right], gap)


def grid(
    images: Sequence[Image.Image], titles: Sequence[str] | None = None, cols: int = 6, label_height: int = 14
) -> Image.Image:
    """Tile images (same size) with a caption line under each (long captions are wrapped, not cut)."""
    if not images:
        raise ValueError("no images to tile")
    w, h = images[0].size
    font = _font(max(10, label_height - 3))
    lines = [_wrap(str(t), font, w - 4) for t in titles] if titles else [[] for _ in images]
    label_h = label_height * max(1, max(len(x) for x in lines))
    rows = (len(images) + cols - 1) // cols
    cols = min(cols, len(images))
    sheet = Image.new("RGB", (cols * w, rows * (h + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x, y = (i % cols) * w, (i // cols) * (h + label_h)
        sheet.paste(im.resize((w, h)), (x, y))
        for n, text in enumerate(lines[i]):
            draw.text((x + 2, y + h + n * label_height), text, fill="black", font=font)
    return sheet


def _wrap(text: str, font, width: int) -> list[str]:
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, cur = [], ""
    for ch in text:
        if cur and draw.textlength(cur + ch, font=font) > width:
            lines.append(cur)
            cur = ""
        cur += ch
    return lines + [cur] if cur else lines or [""]
