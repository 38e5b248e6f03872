"""The answer a map method explains, resolved once: the model's own greedy answer (one
generate, which may capture attention rows on the way) or a given answer, teacher-forced.

Every method then works on the same token ids; none re-tokenises the answer text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..capture.plan import CapturePlan
from ..capture.trace import Trace
from ..errors import VlmscopeError
from ..inputs import Batch, Example
from ..limits import ANSWER_TOKENS
from ..tokenmap import TokenMap

if TYPE_CHECKING:
    from ..scope import Scope


@dataclass
class Answer:
    """``token_map`` covers prompt + answer; ``ids`` are the answer's token ids (the stop token
    included when the model emitted it); ``trace`` is the generate's trace when it captured
    something (e.g. the raw attention rows), else None."""

    prompt: Example  # the example without its answer
    token_map: TokenMap
    ids: list[int]
    text: str
    tokens: list[str]
    generated: bool
    trace: Trace | None = None

    @classmethod
    def resolve(
        cls,
        scope: Scope,
        example: Example,
        max_new_tokens: int = ANSWER_TOKENS,
        capture: CapturePlan | None = None,
        dtype: torch.dtype | None = None,
        **generate_kwargs,
    ) -> Answer:
        """``example.answer`` teacher-forced when given, else the model's greedy answer; `capture`
        is taken during that generate (or the teacher-forced forward) so methods can reuse it.
        `generate_kwargs` go to the model's generate (e.g. a streamer or stopping criteria)."""
        prompt = replace(example, answer=None)
        tok = scope.processor.tokenizer
        if example.answer is not None:
            trace = scope.forward(example, capture, dtype=dtype) if capture is not None else None
            tm = trace.token_maps[0] if trace is not None else scope.prepare(example).token_maps[0]
            scope.check_fits([tm])  # the methods run the model on these ids themselves
            assert tm.answer is not None, "a teacher-forced example has an answer span"
            ids, generated = tm.input_ids[tm.answer[0] : tm.answer[1]], False
        else:
            trace = scope.generate(prompt, capture, max_new_tokens=max_new_tokens, dtype=dtype, **generate_kwargs)
            assert trace.generated_ids is not None, "generate records the generated ids"
            tm, ids, generated = trace.token_maps[0], trace.generated_ids[0], True
        return cls(
            prompt,
            tm,
            list(ids),
            tok.decode(ids, skip_special_tokens=True),
            [tok.decode([t]) for t in ids],
            generated,
            trace if capture is not None else None,
        )

    @classmethod
    def of_ids(cls, scope: Scope, example: Example, ids: list[int]) -> Answer:
        """An answer given as token ids (e.g. another method's generate), teacher-forced."""
        if not ids or not all(isinstance(i, int) or (hasattr(i, "item") and float(i) == int(i)) for i in ids):
            raise VlmscopeError(f"answer ids must be a non-empty list of token ids, got {list(ids)[:5]!r}")
        ids = [int(i) for i in ids]
        prompt = replace(example, answer=None)
        tm = scope.prepare(prompt, with_answers=False).token_maps[0].with_answer(list(ids))
        scope.check_fits([tm])
        tok = scope.processor.tokenizer
        return cls(
            prompt, tm, list(ids), tok.decode(ids, skip_special_tokens=True), [tok.decode([t]) for t in ids], False
        )

    @property
    def rows(self) -> list[int]:
        """Positions whose outputs predict the answer tokens (the query, then answer 0..n-2)."""
        return self.token_map.predicting_positions(len(self.ids))

    def batch(self, scope: Scope, copies: int = 1) -> Batch:
        """Model inputs for prompt + answer ids, teacher-forced; `copies` identical rows (variants
        that differ only in an attention edit share everything else)."""
        prepared = scope.prepare(self.prompt, with_answers=False)
        inputs = dict(prepared.inputs)
        extra = len(self.token_map.input_ids) - prepared.length
        ids = torch.tensor([self.token_map.input_ids])
        inputs["input_ids"] = ids
        inputs["attention_mask"] = torch.ones_like(ids)
        if "mm_token_type_ids" in inputs:
            mm = inputs["mm_token_type_ids"]
            inputs["mm_token_type_ids"] = torch.cat([mm, torch.zeros(1, extra, dtype=mm.dtype)], 1)
        if copies > 1:
            for k, v in inputs.items():
                if not torch.is_tensor(v):
                    continue
                if k.startswith("pixel_values") or k.endswith("grid_thw"):  # per image, not per row
                    inputs[k] = v.repeat(copies, *([1] * (v.dim() - 1)))
                else:
                    inputs[k] = v.expand(copies, *v.shape[1:])
        return Batch(inputs, [self.token_map] * copies, [0] * copies, [self.prompt] * copies).to(scope.input_device)
