"""Titled figures of maps (matplotlib), for PNG files and vector PDF pages.

A map seen without its question, token, method and scale cannot be read, so every figure made
here carries them: the title says what was asked, which answer token is explained, by which
method, and whether the colour scale is this token's own or shared across tokens; the colour bar
gives the real values. Text, axes and colour bars stay vector in a PDF; only the image and the map
(drawn by `overlay.draw_map` at display resolution) are raster.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so they are safe to make in
threads (the app) and are freed when dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from .overlay import MAX_SIDE, MapScale, _cmap, draw_map, fit, map_scale


def _colorbar(fig, ax, scale: MapScale, cmap: str | None, alpha: float, **kw):
    """A colour bar showing each value's colour over white at the map's opacity, real values."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    values = np.linspace(scale.vmin, scale.vmax, 256, dtype=np.float32)
    rgb = _cmap(cmap, scale)(scale.position(values))[:, :3]
    a = (alpha * scale.strength(values))[:, None]
    shown = ListedColormap(rgb * a + (1 - a))  # composited over white
    vmax = scale.vmax if scale.vmax > scale.vmin else scale.vmin + 1e-12
    sm = ScalarMappable(Normalize(scale.vmin, vmax), shown)
    return fig.colorbar(sm, ax=ax, **kw)


def _title(question: str, token: str, method: str, scale: MapScale, index: int | None) -> str:
    tok = f"token {index}: {token!r}" if index is not None else f"token {token!r}"
    head = f"{question}\n" if question else ""  # TokenMaps.save() without a question: no empty line
    return f"{head}{tok} · method: {method} · {scale.label}"


def map_figure(
    image: Image.Image,
    grid,
    *,
    question: str,
    token: str,
    method: str,
    index: int | None = None,
    scale: str | MapScale = "token",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | None = None,
    alpha: float = 0.75,
    outline: float | int = 0.1,
    original: bool = True,
    max_side: int = MAX_SIDE,
    note: str = "",
):
    """A figure: (the original image, if `original`) beside the map over it, titled with the
    `question`, the `token` (answer token number `index`) and the `method`, with a colour bar of
    the scale's real values. Options as `overlay.draw_map`; `note` is a smaller last line (e.g.
    excluded sinks). Save with ``fig.savefig(path)`` (PNG, or vector PDF around the raster map)."""
    from matplotlib.figure import Figure

    g = np.asarray(grid, dtype=np.float32)
    sc = scale if isinstance(scale, MapScale) else map_scale(g, scale, vmin, vmax)
    drawn = draw_map(image, g, cmap=cmap, alpha=alpha, scale=sc, outline=outline, max_side=max_side)
    panels = [fit(image, max_side), drawn] if original else [drawn]
    w, h = drawn.size
    panel_in = 4.0
    fig = Figure(
        figsize=(panel_in * len(panels) * w / max(w, h) + 1.4, panel_in * h / max(w, h) + 1.1), layout="constrained"
    )
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, im, name in zip(axes, panels, ["image", "map"] if original else ["map"]):
        ax.imshow(np.asarray(im), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(name, fontsize=8)
    _colorbar(fig, axes[-1], sc, cmap, alpha, fraction=0.05, pad=0.02)
    fig.suptitle(_title(question, token, method, sc, index), fontsize=9, wrap=True)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="#444")
    return fig


def grid_figure(
    image: Image.Image,
    grids: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    question: str,
    method: str,
    scale: str = "shared",
    cmap: str | None = None,
    alpha: float = 0.75,
    outline: float | int = 0.1,
    cols: int = 6,
    max_side: int = 256,
):
    """Every token's map in one figure (small multiples, titles wrapped, never cut). With
    ``scale='shared'`` one colour bar serves every tile; with 'token' each tile has its own range
    (written under it)."""
    from matplotlib.figure import Figure

    arrs = [np.asarray(g, dtype=np.float32) for g in grids]
    shared = map_scale(np.concatenate([a.ravel() for a in arrs]), "shared") if scale == "shared" else None
    n = len(arrs)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    small = fit(image, max_side)
    w, h = small.size
    tile = 2.0
    fig = Figure(
        figsize=(tile * cols * w / max(w, h) + 1.2, (tile * h / max(w, h) + 0.55) * rows + 0.8), layout="constrained"
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        sc = shared or map_scale(arrs[i], "token")
        ax.imshow(np.asarray(draw_map(small, arrs[i], cmap=cmap, alpha=alpha, scale=sc, outline=outline)))
        ax.set_title(titles[i], fontsize=7, wrap=True)
        if shared is None:
            ax.set_xlabel(f"{sc.vmin:.3g} .. {sc.vmax:.3g}", fontsize=6)
    head = (f"{question}\n" if question else "") + f"method: {method} · "
    head += shared.label if shared else "scale: per token (range under each map)"
    fig.suptitle(head, fontsize=9, wrap=True)
    if shared is not None:
        _colorbar(fig, axes, shared, cmap, alpha, fraction=0.03, pad=0.02)
    return fig
