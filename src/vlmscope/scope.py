"""Scope: a loaded model + processor + adapter, and the two ways to run it with captures."""

from __future__ import annotations

from typing import Sequence

import torch

from .capture.engine import CaptureRun, StopForward
from .capture.plan import CapturePlan
from .capture.trace import Trace
from .errors import VlmscopeError
from .inputs import Batch, Example, prepare


class Scope:
    """What `vlmscope.load` returns. ``model`` and ``processor`` are the untouched HF objects."""

    def __init__(self, model, processor, adapter, source: str = ""):
        self.model, self.processor, self.adapter, self.source = model, processor, adapter, source

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        return self.adapter.language_model.embed_tokens.weight.device

    def describe(self) -> dict:
        return {"source": self.source, **self.adapter.describe()}

    def prepare(self, examples: Example | Sequence[Example], images_root=None, with_answers: bool = True) -> Batch:
        return prepare(self.adapter, examples, images_root=images_root, with_answers=with_answers)

    def _batch(self, batch, with_answers: bool) -> Batch:
        if isinstance(batch, Batch):
            return batch
        return self.prepare(batch, with_answers=with_answers)

    def _plan(self, capture, layers, tokens, reduce) -> CapturePlan | None:
        if capture is None or isinstance(capture, CapturePlan):
            return capture
        return CapturePlan.of(capture, layers=layers, tokens=tokens, reduce=reduce)

    @torch.inference_mode()
    def forward(self, batch: Batch | Example | Sequence[Example], capture=None, *, layers="all",
                tokens: str = "all", reduce: str = "none", dtype: torch.dtype | None = None,
                early_stop: bool = True) -> Trace:
        """One forward pass (answers teacher-forced) capturing `capture` (sites or a CapturePlan).

        With ``early_stop`` the layers after the last needed site do not run.
        """
        batch = self._batch(batch, with_answers=True).to(self.input_device)
        plan = self._plan(capture, layers, tokens, reduce)
        requests = plan.resolve(self.adapter) if plan else []
        run = CaptureRun(self.adapter, batch, requests, generating=False, dtype=dtype, early_stop=early_stop)
        with run.active():
            try:
                self.model(**batch.inputs, use_cache=False)
            except StopForward:
                pass
        return run.finish([tm.length for tm in batch.token_maps])

    @torch.inference_mode()
    def generate(self, batch: Batch | Example | Sequence[Example], capture=None, *, layers="all",
                 tokens: str = "generated", reduce: str = "none", dtype: torch.dtype | None = None,
                 max_new_tokens: int = 32, **generate_kwargs) -> Trace:
        """Greedy generation capturing `capture` at the prefill and every decode step.

        ``tokens="generated"`` keeps, for each generated token j, the position whose output
        predicted it (j = 0 is the query position).
        """
        batch = self._batch(batch, with_answers=False)
        if any(tm.answer is not None for tm in batch.token_maps):
            raise VlmscopeError("generate() takes prompts without answers; use forward() to score an answer")
        batch = batch.to(self.input_device)
        plan = self._plan(capture, layers, tokens, reduce)
        requests = plan.resolve(self.adapter) if plan else []
        run = CaptureRun(self.adapter, batch, requests, generating=True, dtype=dtype)
        kw = {"do_sample": False, "max_new_tokens": max_new_tokens, "pad_token_id": self.processor.tokenizer.pad_token_id,
              **generate_kwargs}
        with run.active():
            out = self.model.generate(**batch.inputs, **kw)
        sequences = out.sequences if hasattr(out, "sequences") else out
        new = sequences[:, batch.length:].tolist()
        stops = self.stop_ids()
        generated = []
        for ids in new:
            cut = next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))
            generated.append(ids[:cut])
        maps = [tm.with_answer(g) for tm, g in zip(batch.token_maps, generated)]
        # the last generated token is never fed back, so rows stop at length - 1
        trace = run.finish([tm.length for tm in maps], limits=[tm.length - 1 for tm in maps], token_maps=maps)
        trace.generated_ids = generated
        tok = self.processor.tokenizer
        trace.generated_text = [tok.decode(g, skip_special_tokens=True) for g in generated]
        return trace

    def stop_ids(self) -> set[int]:
        """Token ids that end an answer: the generation config's eos ids and <|im_end|>."""
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        return set(eos) | {self.adapter.token_ids["im_end"]}
