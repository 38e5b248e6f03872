"""The app's maps, as pure functions of a finished run and the page's settings.

A `Run` keeps what one generate produced: the resolved Answer with every layer's attention rows of
the generated tokens (captured during that generate, SDPA kept) and the frames of each visual.
Raw maps for any layer range, head range or aggregation are then aggregated from those rows
without running the model; the other methods run it once per setting and are cached on the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import VlmscopeError
from ..inputs import Example
from ..methods.answer import Answer
from ..methods.registry import MAP_METHODS, map_method
from ..methods.token_maps import TokenMaps

if TYPE_CHECKING:
    from ..scope import Scope

AGGREGATIONS = ("mean", "max", "min")
COLORMAPS = (
    "auto",
    "inferno",
    "viridis",
    "magma",
    "cividis",
    "plasma",
    "turbo",
    "jet",
    "berlin",
)  # auto: inferno, berlin if signed
VIEWS = ("overlay", "side by side")


@dataclass(frozen=True)
class MapSettings:
    """What the page's map controls say. Layer and head ranges are inclusive."""

    method: str = "raw"
    layers: tuple[int, int] = (0, -1)
    heads: tuple[int, int] = (0, -1)
    head_agg: str = "mean"
    layer_agg: str = "mean"
    exclude_sinks: bool = False

    def options(self, scope: Scope) -> dict[str, Any]:
        """Keyword options of the method, ranges resolved against the model (errors name the range)."""
        if self.method not in MAP_METHODS:
            raise VlmscopeError(f"unknown map method {self.method!r}; choose from {', '.join(MAP_METHODS)}")
        opts: dict[str, Any] = {
            "layers": _range(self.layers, scope.adapter.num_layers, "layer"),
            "exclude_sinks": self.exclude_sinks,
        }
        if MAP_METHODS[self.method].uses_heads:
            opts.update(heads=_range(self.heads, scope.adapter.num_heads, "head"), head_agg=self.head_agg)
        if self.method == "raw":
            opts["layer_agg"] = self.layer_agg
        return opts


def _range(bounds: tuple[int, int], n: int, what: str) -> str:
    lo, hi = (n + int(b) if int(b) < 0 else int(b) for b in bounds)
    if not (0 <= lo < n and 0 <= hi < n):
        raise VlmscopeError(f"{what} range {bounds[0]}-{bounds[1]} is outside 0-{n - 1}")
    if lo > hi:
        raise VlmscopeError(f"{what} range {lo}-{hi} selects nothing: the first {what} must not exceed the last")
    return f"{lo}-{hi}"


@dataclass
class Run:
    """One model's answer to one example, and every map drawn from it so far."""

    model: str
    scope: Scope
    example: Example
    answer: Answer
    frames: list[list[Image.Image]]  # per visual: [image] or the video's frames
    cache: dict[tuple, TokenMaps] = field(default_factory=dict)

    @property
    def tokens(self) -> list[str]:
        return self.answer.tokens

    def visual_kinds(self) -> list[str]:
        return [v.kind for v in self.answer.token_map.visuals]

    def frame_groups(self) -> int:
        """Temporal groups of the first video (1 when there is none): the frame slider's length."""
        return max([v.merged_thw[0] for v in self.answer.token_map.visuals if v.kind == "video"], default=1)


def capture_plan(scope: Scope):
    """Every decoder layer's attention rows of the generated tokens: enough for any raw map."""
    return map_method("raw", layers="all").capture_plan(scope)


def token_maps(run: Run, settings: MapSettings, lock=None) -> TokenMaps:
    """The maps of every answer token for `settings`. Raw maps come from the rows captured during
    the generate (no model run); other methods run the model (under `lock`) once per setting."""
    opts = settings.options(run.scope)
    key = (settings.method, tuple(sorted(opts.items())))
    if key not in run.cache:
        method = map_method(settings.method, **opts)
        if settings.method == "raw" or lock is None:
            run.cache[key] = method.attribute(run.scope, run.example, run.answer)
        else:
            with lock:
                run.cache[key] = method.attribute(run.scope, run.example, run.answer)
        if settings.method == "raw":  # cheap to redo: keep the cache small
            run.cache = {k: v for k, v in run.cache.items() if k[0] != "raw" or k == key}
    return run.cache[key]


def frame_image(run: Run, visual: int, group: int) -> Image.Image:
    """The frame shown for temporal group `group` of `visual`: the first frame of that group."""
    frames = run.frames[visual]
    v = run.answer.token_map.visual(visual)
    return frames[min(group * max(v.temporal_patch_size, 1), len(frames) - 1)]


def grids(maps: TokenMaps, run: Run, token: int, frame: int = 0) -> list[tuple[Image.Image, np.ndarray]]:
    """(picture, [h, w] token grid) of every visual for answer token `token`; videos at temporal
    group `frame` (clamped to the video's groups)."""
    if not 0 <= token < len(maps.tokens):
        raise VlmscopeError(f"token {token} out of range: the answer has tokens 0..{len(maps.tokens) - 1}")
    out = []
    for k, v in enumerate(maps.token_map.visuals):
        g = min(max(frame, 0), v.merged_thw[0] - 1) if v.kind == "video" else 0
        out.append((frame_image(run, k, g), maps.visual_map(token, k)[g]))
    return out


def draw_map(
    image: Image.Image,
    grid: np.ndarray,
    cmap: str | None = None,
    alpha: float = 0.75,
    view: str = "overlay",
    scale=None,
) -> Image.Image:
    """The one place the app draws a map over a picture (viz.overlay's drawing, so the app, the
    files and the reports look alike). `scale`: a viz.overlay.MapScale, or None for the map's own;
    ``side by side`` puts the original to the left."""
    from ..viz import overlay as ov

    if view not in VIEWS:
        raise VlmscopeError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    drawn = ov.draw_map(image, grid, cmap=cmap, alpha=float(alpha), scale=scale or "token")
    return ov.side_by_side(ov.fit(image), drawn) if view == "side by side" else drawn


def render(
    maps: TokenMaps,
    run: Run,
    token: int,
    frame: int = 0,
    cmap: str | None = None,
    alpha: float = 0.75,
    view: str = "overlay",
    height: int = 384,
    colorbar: bool = True,
) -> Image.Image:
    """Every visual's map of `token` side by side, on one scale shared by the visuals, with its
    colour bar on the right."""
    from ..viz import overlay as ov

    pairs = grids(maps, run, token, frame)
    scale = ov.map_scale(np.concatenate([g.ravel() for _, g in pairs]), "shared")
    tiles = []
    for image, grid in pairs:
        tile = draw_map(image, grid, cmap, alpha, view, scale)
        tiles.append(tile.resize((max(1, round(tile.width * height / tile.height)), height), Image.Resampling.LANCZOS))
    if colorbar:
        tiles.append(ov.colorbar_image(scale, height, cmap, float(alpha)))
    return ov.strip(tiles, gap=8)


def map_values(maps: TokenMaps, token: int, frame: int = 0) -> dict[str, Any]:
    """The numbers behind a shown map: token, settings and each visual's [h, w] grid (videos at
    temporal group `frame`). The page keeps them in a hidden element for scripts and tests."""
    visuals = []
    for k, v in enumerate(maps.token_map.visuals):
        g = min(max(frame, 0), v.merged_thw[0] - 1) if v.kind == "video" else 0
        visuals.append(
            {"kind": v.kind, "grid": list(v.merged_thw), "frame": g, "values": maps.visual_map(token, k)[g].tolist()}
        )
    return {
        "token": token,
        "text": maps.tokens[token],
        "method": maps.method,
        "layers": maps.layers,
        "heads": maps.heads,
        "head_agg": maps.head_agg,
        "layer_agg": maps.layer_agg,
        "sinks": maps.sinks,
        "visuals": visuals,
    }


def describe(maps: TokenMaps, token: int, seconds: float) -> str:
    """One line under the map: what it shows and how long it took."""
    layers, heads = maps.layers, maps.heads
    span = lambda xs: f"{xs[0]}-{xs[-1]}" if len(xs) > 1 else str(xs[0])  # noqa: E731
    row = maps.maps[token]
    parts = [f"token {token} {maps.tokens[token]!r}", maps.method, f"layers {span(layers)}"]
    if MAP_METHODS[maps.method].uses_heads:
        parts.append(f"heads {span(heads)} ({maps.head_agg})")
    if maps.method == "raw":
        parts.append(f"layers {maps.layer_agg}")
    if maps.sinks:
        parts.append(f"sinks excluded: {maps.sinks}")
    parts.append(f"range {np.nanmin(row):.3g}..{np.nanmax(row):.3g}")
    parts.append(f"{seconds * 1000:.1f} ms")
    return " · ".join(parts)


def timed(fn, *args, **kwargs):
    """(result, seconds)."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def token_labels(tokens: list[str]) -> list[str]:
    """Unique, readable radio labels for answer tokens: 'j: token'."""
    return [f"{j}: {t!r}" for j, t in enumerate(tokens)]


def shared_tokens(answers: list[list[str]], skip: frozenset[str] = frozenset()) -> list[tuple[str, list[int]]]:
    """Tokens every answer contains (compared stripped and lower-cased), in the first answer's
    order, with each answer's index of its first occurrence. `skip`: tokens never matched (e.g.
    the end-of-turn marker)."""
    norm = [[t.strip().lower() for t in a] for a in answers]
    out: list[tuple[str, list[int]]] = []
    seen = set()
    for t in norm[0] if norm else []:
        if not t or t in seen or t in skip:
            continue
        seen.add(t)
        if all(t in other for other in norm):
            out.append((t, [other.index(t) for other in norm]))
    return out
