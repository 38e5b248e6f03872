"""Parsing of the small languages users type: layer specs, token selections, reductions.

Layer indices are 0-based decoder layers. ``llm.layers.{i}`` is the residual stream leaving
decoder layer i, which is what layer i+1 receives; in transformers' terms that is
``output_hidden_states[i + 1]`` (with two exceptions documented in the README, "Mapping to output_hidden_states").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import VlmscopeError

REDUCTIONS = ("none", "mean", "max", "last")
SELECTIONS = ("vision", "vision_last", "text", "query", "generated", "all")  # plus image:k


def parse_layers(spec: str | int | list[int] | tuple[int, ...] | None, n: int, what: str = "layer") -> list[int]:
    """Resolve a layer spec against `n` layers into sorted, unique, 0-based indices.

    Accepted: ``all``, ``halp`` (0, n/4, n/2, 3n/4, n-1), ``0,8,16``, negative indices (``-1`` is
    the last layer), ranges ``4-8`` or ``4:8`` (inclusive / exclusive end), fractions ``n/4``,
    ``3n/4`` (also as range or slice bounds: ``n/2:``, ``n/4-3n/4``), an int, or a list of ints.
    A spec that selects nothing, or an index past the last layer, is an error naming the spec.
    """
    if spec is None or spec == "all":
        return list(range(n))
    if isinstance(spec, int):
        items: list = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        text = str(spec).strip().lower()
        if text == "halp":
            return sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
        items = [p.strip() for p in text.split(",") if p.strip()]
        if not items:
            raise VlmscopeError(f"empty {what} spec {spec!r}; use e.g. 'all', 'halp', '0,8,-1', '2-5', 'n/2'")
    out: set[int] = set()
    for item in items:
        out.update(_parse_item(item, n, spec, what))
    return sorted(out)


def check_layer_syntax(spec: str | int | list[int] | tuple[int, ...] | None, what: str = "layer") -> None:
    """Check a layer spec without the model (before it loads): its syntax, its fractions, and
    ranges between two plain indices of the same sign that go down. Whether the indices exist
    is checked by ``parse_layers`` once the model's depth is known."""
    if spec is None or isinstance(spec, int) or str(spec).strip().lower() in ("all", "halp"):
        return
    if isinstance(spec, (list, tuple)):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in spec):
            raise VlmscopeError(f"bad {what} spec {spec!r}: a list of {what}s holds whole numbers")
        return
    items = [p.strip() for p in str(spec).strip().lower().split(",") if p.strip()]
    if not items:
        raise VlmscopeError(f"empty {what} spec {spec!r}; use e.g. 'all', 'halp', '0,8,-1', '2-5', 'n/2'")
    for item in items:
        m = re.fullmatch(rf"({_START})\s*-\s*({_ATOM})", item) or re.fullmatch(rf"({_ATOM})?\s*:\s*({_ATOM})?", item)
        if m is None and not re.fullmatch(_ATOM, item):
            _parse_item(item, 1, spec, what)  # raises the syntax error
        for atom in m.groups() if m else (item,):
            if atom is not None and "n" in atom:
                _value(atom, 1, spec, what)  # k > d, d = 0
        ints = [int(g) for g in m.groups() if g is not None and "n" not in g] if m else []
        if len(ints) == 2 and (ints[0] < 0) == (ints[1] < 0):
            lo, hi = ints
            if hi < lo or (":" in item and hi == lo):
                raise VlmscopeError(
                    f"{what} spec {spec!r} selects no {what}s (item {item!r} is empty); "
                    "a range goes up, e.g. '1-3', '1:3', '-3:'"
                )


_INT = r"-?\d+"
_FRACTION = r"\d*\s*n\s*/\s*\d+"  # k n / d, e.g. n/4 or 3n/4
_ATOM = rf"(?:{_INT}|{_FRACTION})"
_START = rf"(?:\d+|{_FRACTION})"  # a range's start cannot be negative: '-' separates


def _parse_item(item, n: int, spec, what: str) -> list[int]:
    if isinstance(item, int):
        return [_check(item, n, spec, what)]
    m = re.fullmatch(rf"({_START})\s*-\s*({_ATOM})", item)  # inclusive range, e.g. 2-5, 2--1, n/4-3n/4
    if m:
        lo, hi = (_check(_value(g, n, spec, what), n, spec, what) for g in m.groups())
        return _nonempty(list(range(lo, hi + 1)), item, n, spec, what)
    m = re.fullmatch(rf"({_ATOM})?\s*:\s*({_ATOM})?", item)  # python slice, end exclusive, bounds clamp
    if m:
        start, stop = (None if g is None else _value(g, n, spec, what) for g in m.groups())
        return _nonempty(list(range(n))[slice(start, stop)], item, n, spec, what)
    if re.fullmatch(_ATOM, item):
        return [_check(_value(item, n, spec, what), n, spec, what)]
    raise VlmscopeError(
        f"bad {what} spec {spec!r} (item {item!r}); use 'all', 'halp', '0,8,-1', '2-5', '2:5', 'n/4', '3n/4', 'n/2:'"
    )


def _value(atom: str, n: int, spec, what: str) -> int:
    """An integer, or a fraction ``k n / d`` of the depth (floor of k*n/d; at most n)."""
    m = re.fullmatch(r"(\d*)\s*n\s*/\s*(\d+)", atom)
    if not m:
        return int(atom)
    k, d = int(m.group(1) or 1), int(m.group(2))
    if d == 0 or k > d:
        raise VlmscopeError(
            f"bad {what} spec {spec!r}: fraction {atom!r} must be k n/d with 0 < d and k <= d (e.g. 'n/4', '3n/4')"
        )
    return k * n // d


def _nonempty(indices: list[int], item: str, n: int, spec, what: str) -> list[int]:
    if not indices:
        raise VlmscopeError(
            f"{what} spec {spec!r} selects no {what}s (item {item!r} is empty for {n} {what}s "
            f"0..{n - 1}); a range goes up, e.g. '1-3', '1:3', '-3:'"
        )
    return indices


def _check(i: int, n: int, spec, what: str) -> int:
    if not -n <= i < n:
        raise VlmscopeError(f"{what} {i} out of range in {spec!r}: the model has {n} {what}s (0..{n - 1})")
    return i % n


@dataclass(frozen=True)
class Selection:
    """Which sequence positions to keep: a kind plus, for ``image:k``, the visual index."""

    kind: str
    index: int | None = None

    def __str__(self) -> str:
        return f"image:{self.index}" if self.kind == "image" else self.kind


def parse_selection(text: str | Selection) -> Selection:
    if isinstance(text, Selection):
        return text
    t = str(text).strip().lower()
    if t in SELECTIONS:
        return Selection(t)
    m = re.fullmatch(r"(image|video|visual):(\d+)", t)
    if m:
        return Selection("image", int(m.group(2)))
    raise VlmscopeError(f"unknown token selection {text!r}; choose from {', '.join(SELECTIONS)}, image:K")


def parse_reduction(text: str) -> str:
    t = str(text).strip().lower()
    if t not in REDUCTIONS:
        raise VlmscopeError(f"unknown reduction {text!r}; choose from {', '.join(REDUCTIONS)}")
    return t
