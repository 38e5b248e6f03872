"""HTML pages from Jinja2 templates, with every image embedded at display size.

The run report, `vlmscope attention`'s report.html, `vlmscope compare` and the app share the
parts in ``viz/templates/`` (macros.html.j2: the token x method grid, the detail view, the
provenance table, the token map, text importance); this module renders them and builds the data
they read from map results.

Why pages stay small for any input image: each image is embedded once, fitted to `MAX_SIDE`
and encoded as PNG or JPEG (whichever is smaller), as a CSS background that every view of the
image reuses. A map is a separate transparent layer drawn over it: a palette PNG with one entry
per colour level of the scale (254 levels + the two outline colours), at a few pixels per token
cell, stretched by the browser without smoothing. Its size depends on the token grid, not on the
photo, and the browser's alpha compositing gives the same pixels as `overlay.draw_map`.
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import VlmscopeError
from .overlay import MAX_SIDE, MapScale, _cmap, fit, map_scale, outline_masks

TEMPLATES = Path(__file__).parent / "templates"
LEVELS = 254  # colour levels of a map layer's palette; entries 254, 255: the outline's white, black


@functools.lru_cache(maxsize=1)
def environment():
    """The shared Jinja2 environment (autoescape on; templates from viz/templates)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _fmt
    env.filters["tokrepr"] = repr  # a token as Python shows it: quotes, escapes, whitespace visible
    return env


def render(template_name: str, **context: Any) -> str:
    """Render ``viz/templates/<template_name>`` (e.g. 'run_report.html.j2') with `context`.
    Other templates can import the macros: ``{% import 'macros.html.j2' as ui %}``."""
    import jinja2

    try:
        template = environment().get_template(template_name)
    except jinja2.TemplateNotFound:
        names = ", ".join(sorted(p.name for p in TEMPLATES.glob("*.j2")))
        raise VlmscopeError(f"unknown page template {template_name!r}; available: {names}") from None
    return template.render(**context)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.1e}"


def encode(img: Image.Image, fmt: str = "auto", quality: int = 85) -> tuple[str, bytes]:
    """Image -> (mime type, bytes). 'auto': the smaller of an optimised PNG (exact; synthetic
    images) and a JPEG at `quality` (photos); images with transparency are always PNG."""
    fmt = fmt.lower()
    if fmt not in ("auto", "png", "jpeg"):
        raise VlmscopeError(f"unknown image format {fmt!r}; choose from auto, png, jpeg")
    out: list[tuple[str, bytes]] = []
    if fmt in ("auto", "png"):
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        out.append(("image/png", buf.getvalue()))
    if fmt == "jpeg" or (fmt == "auto" and img.mode in ("RGB", "L")):
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
        out.append(("image/jpeg", buf.getvalue()))
    return min(out, key=lambda mb: len(mb[1]))


def data_uri(img: Image.Image, fmt: str = "auto", max_side: int | None = MAX_SIDE) -> str:
    """An image as a base64 data URI, fitted to `max_side` first (None: as it is)."""
    if max_side is not None and max(img.size) > max_side:
        img = fit(img, max_side)
    mime, data = encode(img, fmt)
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def palette(scale: MapScale, cmap: str | None = None, alpha: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """([256, 3] uint8 colours, [256] uint8 opacities) of a map layer: entry i < LEVELS is the
    colour of position i / (LEVELS - 1) on the scale; entries 254 and 255 are white and black."""
    pos = np.linspace(0, 1, LEVELS, dtype=np.float32)
    # the value at each position, so strength and colour follow the scale's own rules
    values = (
        (2 * pos - 1) * max(abs(scale.vmin), abs(scale.vmax))
        if scale.signed
        else scale.vmin + pos * (scale.vmax - scale.vmin)
    )
    rgb = (_cmap(cmap, scale)(scale.position(values))[:, :3] * 255).round().astype(np.uint8)
    a = (alpha * scale.strength(values) * 255).round().astype(np.uint8)
    rgb = np.concatenate([rgb, [[255, 255, 255], [0, 0, 0]]]).astype(np.uint8)
    return rgb, np.concatenate([a, [255, 255]]).astype(np.uint8)


def layer_image(
    grid,
    scale: MapScale,
    cmap: str | None = None,
    alpha: float = 0.75,
    outline: float | int = 0.1,
    target: int = 384,
) -> Image.Image:
    """A map as a transparent palette ('P') image, about `target` px on its long side and a whole
    number of pixels per token cell; stretch it over the image (CSS ``image-rendering:
    pixelated``) to see what `overlay.draw_map` draws."""
    g = np.nan_to_num(np.asarray(grid, dtype=np.float32))
    if g.ndim != 2:
        raise VlmscopeError(f"a map to draw is an [h, w] grid, got shape {tuple(g.shape)}")
    k = max(1, target // max(g.shape))
    size = (g.shape[1] * k, g.shape[0] * k)
    idx = np.round(scale.position(g) * (LEVELS - 1)).astype(np.uint8)
    px = np.repeat(np.repeat(idx, k, 0), k, 1)
    white, black = outline_masks(g, size, outline, scale)
    px[white], px[black] = LEVELS, LEVELS + 1
    rgb, a = palette(scale, cmap, alpha)
    img = Image.fromarray(px, "P")
    img.putpalette(rgb.ravel().tolist())
    img.info["transparency"] = a.tobytes()
    return img


def layer_uri(grid, scale: MapScale, cmap: str | None = None, alpha: float = 0.75, outline: float | int = 0.1) -> str:
    buf = io.BytesIO()
    img = layer_image(grid, scale, cmap, alpha, outline)
    img.save(buf, format="PNG", optimize=True, transparency=img.info["transparency"])
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colorbar_uri(scale: MapScale, cmap: str | None = None, alpha: float = 0.75) -> str:
    """A 1 x LEVELS vertical strip (top: vmax) of the layer's palette; over a white page it shows
    the colours a value takes over white."""
    strip = np.arange(LEVELS - 1, -1, -1, dtype=np.float32)[:, None] / (LEVELS - 1)
    values = (
        (2 * strip - 1) * max(abs(scale.vmin), abs(scale.vmax))
        if scale.signed
        else scale.vmin + strip * (scale.vmax - scale.vmin)
    )
    return layer_uri(values, scale, cmap, alpha, outline=0)


def css_colour(value: float, scale: MapScale, cmap: str | None = None, alpha: float = 0.75) -> str:
    """The map's colour and opacity for one value, as CSS rgba() (text-importance spans)."""
    rgb = _cmap(cmap, scale)(float(scale.position(np.float32(value))))
    a = alpha * float(scale.strength(np.float32(value)))
    return f"rgba({round(rgb[0] * 255)},{round(rgb[1] * 255)},{round(rgb[2] * 255)},{a:.3f})"


def _scale_dict(scale: MapScale) -> dict:
    mid = 0.0 if scale.signed else (scale.vmin + scale.vmax) / 2
    return {"vmin": scale.vmin, "vmax": scale.vmax, "mid": mid, "label": scale.label, "signed": scale.signed}


def colorbars(cmap: str | None = None, alpha: float = 0.75) -> dict[str, str]:
    """The two colour-bar strips a page needs ('sequential', 'signed'); a scale's values are
    written beside the strip by the template (top: vmax, middle: mid, bottom: vmin)."""
    return {
        "sequential": colorbar_uri(MapScale(0.0, 1.0), cmap, alpha),
        "signed": colorbar_uri(MapScale(-1.0, 1.0, signed=True), cmap, alpha),
    }


def maps_context(
    results: Mapping[str, Any],
    summaries: Mapping[str, str] | None = None,
    cmap: str | None = None,
    alpha: float = 0.75,
    outline: float | int = 0.1,
    max_side: int = MAX_SIDE,
) -> dict:
    """What the grid and detail macros read, from ``{method: TokenMaps}`` explaining one answer.

    Returns ``{"tokens": [str], "visuals": [{index, kind, uri, width, height, grid}],
    "methods": [{name, summary, sinks, sink_reasons, shared: scale, maps}], "bars": colorbars()}``
    where ``maps[j][k] = {"token": layer uri, "shared": layer uri, "scale": per-token scale}``
    for token j on visual k; scales are {vmin, vmax, mid, label, signed}. Every method must explain the same
    answer tokens over the same images (one `Answer`)."""
    if not results:
        raise VlmscopeError("no map results to show")
    first = next(iter(results.values()))
    visuals = []
    for k, image in enumerate(first.images):
        v = first.token_map.visual(k)
        shown = fit(image, max_side)
        visuals.append(
            {
                "index": k,
                "kind": v.kind,
                "uri": data_uri(shown, max_side=None),
                "width": shown.width,
                "height": shown.height,
                "grid": list(v.merged_thw[1:]),
            }
        )
    methods = []
    for name, r in results.items():
        if list(r.tokens) != list(first.tokens):
            raise VlmscopeError(f"method {name!r} explains other tokens than {first.method!r}; use one Answer")
        grids = [[r.visual_map(j, k)[0] for k in range(len(visuals))] for j in range(len(r.tokens))]
        shared = map_scale(np.concatenate([g.ravel() for row in grids for g in row]), "shared")
        maps = []
        for row in grids:
            cells = []
            for g in row:
                own = map_scale(g, "token")
                cells.append(
                    {
                        "token": layer_uri(g, own, cmap, alpha, outline),
                        "shared": layer_uri(g, shared, cmap, alpha, outline),
                        "scale": _scale_dict(own),
                    }
                )
            maps.append(cells)
        methods.append(
            {
                "name": name,
                "summary": (summaries or {}).get(name, ""),
                "sinks": list(getattr(r, "sinks", []) or []),
                "sink_reasons": {str(c): str(why) for c, why in (r.settings.get("sink_reasons") or {}).items()},
                "shared": _scale_dict(shared),
                "maps": maps,
            }
        )
    bars = colorbars(cmap, alpha)
    script = {  # what the page's script reads (layer images are read from the grid, not repeated)
        "tokens": list(first.tokens),
        "labels": [repr(t) for t in first.tokens],
        "bars": bars,
        "methods": [m["name"] for m in methods],
        "shared": [m["shared"] for m in methods],
        "scales": [[[cell["scale"] for cell in row] for row in m["maps"]] for m in methods],
    }
    return {"tokens": list(first.tokens), "visuals": visuals, "methods": methods, "bars": bars, "script": script}


def text_importance_context(
    results: Mapping[str, Any], labels: Sequence[str], cmap: str | None = None, alpha: float = 0.75
) -> list[dict]:
    """Per method that kept the prompt's text (``text_maps``): rows of (prompt token, value,
    colour) per answer token, on one scale per method; `labels` are the prompt's text tokens in
    sequence order (the columns of ``text_maps``)."""
    out = []
    for name, r in results.items():
        tm = getattr(r, "text_maps", None)
        if tm is None or tm.size == 0:
            continue
        if tm.shape[1] != len(labels):
            raise VlmscopeError(f"method {name!r} has {tm.shape[1]} text columns but {len(labels)} labels")
        scale = map_scale(tm, "shared")
        rows = [
            {
                "token": r.tokens[j],
                "cells": [
                    {"text": t, "value": float(v), "colour": css_colour(float(v), scale, cmap, alpha)}
                    for t, v in zip(labels, tm[j])
                ],
            }
            for j in range(tm.shape[0])
        ]
        out.append({"name": name, "scale": _scale_dict(scale), "rows": rows})
    return out
