"""How the objects a researcher holds show themselves in Jupyter: small escaped HTML (tables and
inline images, no scripts), built here so every `_repr_html_` looks alike."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_STYLE = "border-collapse:collapse;font-size:12px;margin:2px 0"
_CELL = "border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top"


def esc(value: Any) -> str:
    return html.escape(str(value))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless `raw` (cells that hold HTML already, e.g. images)."""
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{c if raw else esc(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    return f'<table style="{_STYLE}"><tr>{head}</tr>{body}</table>'


def fields(pairs: Mapping[str, Any]) -> str:
    """A two-column table of names and values."""
    rows = "".join(
        f'<tr><th style="{_CELL}">{esc(k)}</th><td style="{_CELL}">{esc(v)}</td></tr>' for k, v in pairs.items()
    )
    return f'<table style="{_STYLE}">{rows}</table>'


def block(title: str, *parts: str) -> str:
    """A titled group of parts (each already HTML)."""
    return f'<div><div style="font-weight:600;margin:4px 0">{esc(title)}</div>{"".join(parts)}</div>'


def image(uri: str, height: int = 96, title: str = "") -> str:
    """An inline image (a data: URI) at `height` pixels, token edges kept sharp."""
    return f'<img src="{uri}" title="{esc(title)}" style="height:{height}px;image-rendering:pixelated">'


def span(bounds: tuple[int, int] | None) -> str:
    return "-" if bounds is None else f"{bounds[0]}-{bounds[1]}"
