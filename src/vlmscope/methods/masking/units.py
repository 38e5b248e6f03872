"""What gets masked: units of one or more sequence positions, built from the TokenMap.

A unit is a single prompt token, a whole word, one vision token, a k x k window of vision tokens
(tiled or sliding, always whole windows of equal size), or a whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import VlmscopeError
from ...tokenmap import TokenMap, Visual

MODES = ("text", "vision", "both")
TEXT_UNITS = ("token", "word")


@dataclass(frozen=True)
class Unit:
    """Positions masked together. Vision units also name their image and the raster indices
    (``cells``) of the tokens they cover in that image's merged grid."""

    kind: str  # "text" | "vision"
    label: str
    positions: tuple[int, ...]
    image: int | None = None
    cells: tuple[int, ...] = ()

    @property
    def first(self) -> int:
        return min(self.positions)

    @property
    def image_index(self) -> int:
        """The image of a vision unit."""
        assert self.image is not None, f"unit {self.label!r} is not a vision unit"
        return self.image

    def box(self, visual: Visual) -> list[float]:
        """Pixel box (x0, y0, x1, y1) in the original image around every token of the unit."""
        boxes = visual.token_boxes()[list(self.cells)]
        return [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]

    def to_dict(self) -> dict:
        d: dict[str, object] = {"kind": self.kind, "label": self.label, "positions": list(self.positions)}
        if self.kind == "vision":
            d.update(image=self.image, cells=list(self.cells))
        return d


def parse_mode(mode: str) -> str:
    m = str(mode or "").strip().lower()
    if m not in MODES:
        raise VlmscopeError(f"unknown mask mode {mode!r}; choose from {', '.join(MODES)}")
    return m


def parse_window(window: int | str) -> int | str:
    """An int >= 1 (k x k vision tokens) or 'image' (the whole image)."""
    text = str(window).strip().lower()
    if text == "image":
        return "image"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise VlmscopeError(f"bad window {window!r}; use a positive number of vision tokens per side or 'image'")


def build_units(
    tm: TokenMap,
    tokenizer,
    mode: str = "vision",
    window: int | str = 1,
    stride: int | None = None,
    text_unit: str = "token",
) -> list[Unit]:
    """Units of `mode` for one example; errors name the bad value when the selection is empty."""
    mode, window = parse_mode(mode), parse_window(window)
    if text_unit not in TEXT_UNITS:
        raise VlmscopeError(f"unknown text unit {text_unit!r}; choose from {', '.join(TEXT_UNITS)}")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise VlmscopeError(f"bad stride {stride!r}; use a positive number of vision tokens")
    units: list[Unit] = []
    if mode in ("text", "both"):
        positions = tm.text_positions()
        if not positions:
            raise VlmscopeError(f"mask mode {mode!r} selects no text: the prompt has no text tokens; use --mode vision")
        units += (
            _words(tm, tokenizer, positions)
            if text_unit == "word"
            else [Unit("text", _piece(tokenizer, tm.input_ids[p]), (p,)) for p in positions]
        )
    if mode in ("vision", "both"):
        images = [v for v in tm.visuals if v.kind == "image"]
        if not images:
            raise VlmscopeError(
                f"mask mode {mode!r} selects no vision tokens: the example has no image; use --mode text"
            )
        for v in images:
            units += _image_units(v, window, stride)
    return units


def _piece(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id])


def _words(tm: TokenMap, tokenizer, positions: list[int]) -> list[Unit]:
    """Group adjacent text tokens into words: a word starts after a gap or at leading whitespace,
    and punctuation stands alone."""
    groups: list[list[int]] = []
    for i, p in enumerate(positions):
        piece = _piece(tokenizer, tm.input_ids[p])
        joins = (
            i > 0
            and positions[i - 1] == p - 1
            and not piece[:1].isspace()
            and piece.isalnum()
            and _piece(tokenizer, tm.input_ids[p - 1]).strip().isalnum()
        )
        if joins:
            groups[-1].append(p)
        else:
            groups.append([p])
    units = []
    for g in groups:
        text = tokenizer.decode([tm.input_ids[p] for p in g])
        units.append(Unit("text", text.strip() or repr(text), tuple(g)))
    return units


def _starts(n: int, k: int, stride: int) -> list[int]:
    """Window starts covering 0..n-1 with whole windows: the last one is moved back to end at n."""
    out = list(range(0, n - k + 1, stride))
    if out[-1] != n - k:
        out.append(n - k)
    return out


def _image_units(v: Visual, window: int | str, stride: int | None) -> list[Unit]:
    positions = v.positions
    if window == "image":
        return [Unit("vision", f"image {v.index}", tuple(positions), v.index, tuple(range(len(positions))))]
    assert isinstance(window, int), window  # parse_window gives an int or 'image'
    _, h, w = v.merged_thw  # images have one temporal group
    if window > min(h, w):
        raise VlmscopeError(
            f"window {window} is larger than the {h}x{w} token grid of image {v.index}; "
            f"use a window of 1..{min(h, w)} or 'image'"
        )
    step = stride if stride is not None else window
    raster = np.arange(h * w).reshape(h, w)
    units = []
    for r in _starts(h, window, step):
        for c in _starts(w, window, step):
            cells = tuple(int(i) for i in raster[r : r + window, c : c + window].reshape(-1))
            label = f"image {v.index} ({r},{c})" + (f" {window}x{window}" if window > 1 else "")
            units.append(Unit("vision", label, tuple(positions[i] for i in cells), v.index, cells))
    return units
