"""The one registry of map methods: the CLI's choices, the run report, the faithfulness
evaluation and the app all read MAP_METHODS. Adding a method = one class + one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import VlmscopeError
from ..inputs import Example
from ..limits import ANSWER_TOKENS
from .answer import Answer
from .base import MapMethod
from .gradient import GradientRelevancy
from .masking.maps import MaskingMap
from .raw import RawAttention
from .rollout import Rollout
from .token_maps import TokenMaps
from .windows import WindowKnockout

if TYPE_CHECKING:
    from ..scope import Scope

MAP_METHODS: dict[str, type[MapMethod]] = {
    m.name: m for m in (RawAttention, Rollout, GradientRelevancy, MaskingMap, WindowKnockout)
}


def check_method_names(names) -> list[str]:
    """Method names (a list or 'a,b'), checked before any model is loaded."""
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n) for n in names]
    bad = [n for n in names if n not in MAP_METHODS]
    if bad or not names:
        raise VlmscopeError(f"unknown map method {bad[0] if bad else ''!r}; choose from {', '.join(MAP_METHODS)}")
    return names


def map_method(name: str, **options) -> MapMethod:
    """An instance of the method called `name` with `options` (its constructor's keywords)."""
    check_method_names([name])
    try:
        return MAP_METHODS[name](**options)
    except TypeError as e:
        raise VlmscopeError(f"bad option for map method {name!r}: {e}") from None


def explain(
    scope: Scope, example: Example, method: str = "raw", max_new_tokens: int = ANSWER_TOKENS, **options
) -> TokenMaps:
    """Generate (or teacher-force ``example.answer``) and map every answer token onto the
    image(s) with one method: the convenience form of ``map_method(...).attribute(...)``."""
    m = map_method(method, **options)
    answer = Answer.resolve(
        scope, example, max_new_tokens, capture=m.capture_plan(scope), dtype=getattr(m, "dtype", None)
    )
    return m.attribute(scope, example, answer)
