"""Lenses as methods: the same `attribute(scope, example, answer)` call as the map methods, one
class per kind, listed in LENS_METHODS (the run report and the CLI read it).

A lens reads the prompt's vision tokens, so the answer only fixes which example is read; it is
accepted for the shared interface and so that a report runs every method on one resolved answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ...inputs import Example
from ..answer import Answer
from . import lens
from .result import Lens

if TYPE_CHECKING:
    from ...scope import Scope


class LensMethod:
    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, layers="all", k: int = 5, index=None):
        self.layers, self.k, self.index = layers, k, index

    def attribute(self, scope: Scope, example: Example, answer: Answer | None = None) -> Lens:
        return lens(
            scope,
            answer.prompt if answer is not None else example,
            kind=self.kind,
            layers=self.layers,
            k=self.k,
            index=self.index,
        )


class LogitLens(LensMethod):
    kind = "logit"
    summary = "each vision token's stream through the final norm and the LM head: top-k tokens per layer"


class EmbeddingLens(LensMethod):
    kind = "embedding"
    summary = "nearest rows of the input embedding matrix by cosine, per layer"


class ValueLens(LensMethod):
    kind = "value"
    summary = "what each layer's attention would read from the token (its OV circuit), through the LM head"


class ContextualLens(LensMethod):
    kind = "contextual"
    summary = "nearest caption tokens as the model's own LLM represents them (needs an index)"


LENS_METHODS: dict[str, type[LensMethod]] = {m.kind: m for m in (LogitLens, EmbeddingLens, ValueLens, ContextualLens)}
