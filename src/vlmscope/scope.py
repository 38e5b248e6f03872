"""Scope: a loaded model + processor + adapter, and the two ways to run it with captures and
edits. `load` is the one composition root: it loads the model (models/), installs the attention
wrapper (capture/) and hands both to a Scope."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .capture.attention import install
from .capture.edits import Edit, resolve_edits
from .capture.engine import CaptureRun
from .capture.hooks import StopForward
from .capture.plan import CapturePlan
from .capture.trace import Trace
from .errors import VlmscopeError
from .inputs import Batch, Example, prepare
from .limits import ANSWER_TOKENS, check_context_length
from .models.adapter import Adapter

Edits = Mapping[str, "Callable[[torch.Tensor], torch.Tensor] | Edit"]


@dataclass
class Provenance:
    """How the model was loaded: what a report or a store records next to its results."""

    source: str
    revision: str | None = None
    dtype: str = ""
    attn_implementation: str = ""
    min_pixels: int | None = None
    max_pixels: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "revision": self.revision,
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            **self.extra,
        }


def load(
    model: str | Path | None = None,
    device: str = "auto",
    dtype="auto",
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> Scope:
    """Load a Qwen-VL checkpoint (hub id or directory; none: the bundled shapes model) and return
    a Scope.

    ``device_map="auto"`` spreads a model too big for one GPU with accelerate. Weights load with
    safetensors only; remote code runs only if ``trust_remote_code=True``.
    """
    from .models.loading import load_model

    hf_model, processor, adapter, source = load_model(
        model,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
        device_map=device_map,
        trust_remote_code=trust_remote_code,
        revision=revision,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )
    base = install(hf_model)
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    pick = (
        (lambda k: size.get(k) if isinstance(size, dict) else getattr(size, k, None))
        if size is not None
        else (lambda k: None)
    )
    provenance = Provenance(
        source,
        revision,
        str(next(hf_model.parameters()).dtype).replace("torch.", ""),
        base,
        pick("shortest_edge"),
        pick("longest_edge"),
    )
    return Scope(hf_model, processor, adapter, provenance)


class Scope:
    """What `vlmscope.load` returns. ``model`` and ``processor`` are the untouched HF objects."""

    def __init__(self, model, processor, adapter: Adapter, provenance: Provenance | str = ""):
        self.model, self.processor, self.adapter = model, processor, adapter
        self.provenance = provenance if isinstance(provenance, Provenance) else Provenance(str(provenance))

    @property
    def source(self) -> str:
        return self.provenance.source

    @property
    def attn_base(self) -> str:
        """The attention kernel behind vlmscope's wrapper (sdpa, eager, flash_attention_2, ...)."""
        return self.provenance.attn_implementation or str(self.adapter.text_config._attn_implementation)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        return self.adapter.language_model.embed_tokens.weight.device

    def describe(self) -> dict:
        return {
            "source": self.source,
            **self.adapter.describe(),
            "attn_implementation": self.attn_base,
            "provenance": self.provenance.to_dict(),
        }

    def prepare(
        self, examples: Example | str | Sequence[Example | str], images_root=None, with_answers: bool = True
    ) -> Batch:
        items = _examples(examples)
        if _domain_checks_left > 0 and self.bundled:
            _warn_if_not_shapes([items] if isinstance(items, Example) else items, images_root)
        return prepare(self.adapter, items, images_root=images_root, with_answers=with_answers)

    def check_fits(self, token_maps: Sequence, new_tokens: int = 0) -> None:
        """Refuse, before the model runs, examples whose tokens plus `new_tokens` to generate do not
        fit the model's context: positions past it were never trained, and such a run is silently
        wrong (and may take minutes and tens of GB first)."""
        for b, tm in enumerate(token_maps):
            reason = check_context_length(self.model.config, tm.length, new_tokens)
            if reason:
                raise VlmscopeError(f"example {b}: {reason}" if len(token_maps) > 1 else reason)

    @property
    def bundled(self) -> bool:
        """Is this the bundled shapes model (which knows nothing but shapes scenes)?"""
        from .assets import bundled_model_dir

        path = bundled_model_dir()
        return path is not None and Path(self.source).resolve() == Path(path).resolve()

    def _batch(self, batch, with_answers: bool) -> Batch:
        if isinstance(batch, Batch):
            return batch
        return self.prepare(batch, with_answers=with_answers)

    def _plan(self, capture, layers, tokens, reduce) -> CapturePlan | None:
        if capture is None or isinstance(capture, CapturePlan):
            return capture
        if not isinstance(capture, (str, list, tuple)) or not all(isinstance(c, str) for c in capture):
            raise VlmscopeError(f"capture takes a site name, a list of site names or a CapturePlan, got {capture!r}")
        return CapturePlan.of(capture, layers=layers, tokens=tokens, reduce=reduce)

    @torch.inference_mode()
    def forward(
        self,
        batch: Batch | Example | str | Sequence[Example | str],
        capture=None,
        *,
        layers="all",
        tokens: str = "all",
        reduce: str = "none",
        dtype: torch.dtype | None = None,
        early_stop: bool = True,
        edits: Edits | None = None,
    ) -> Trace:
        """One forward pass (answers teacher-forced) capturing `capture` (sites or a CapturePlan).

        ``edits`` maps concrete site names to functions that replace the tensor there (see
        `vlmscope.Edit`). With ``early_stop`` the layers after the last needed site do not run.
        """
        batch = self._batch(batch, with_answers=True)
        self.check_fits(batch.token_maps)
        batch = batch.to(self.input_device)
        plan = self._plan(capture, layers, tokens, reduce)
        requests = plan.resolve(self.adapter) if plan else []
        run = CaptureRun(
            self.adapter,
            batch,
            requests,
            generating=False,
            dtype=dtype,
            early_stop=early_stop,
            edits=resolve_edits(self.adapter, edits),
        )
        with run.active():
            try:
                self.model(**batch.inputs, use_cache=False)
            except StopForward:
                pass
        return run.finish([tm.length for tm in batch.token_maps])

    @torch.inference_mode()
    def generate(
        self,
        batch: Batch | Example | str | Sequence[Example | str],
        capture=None,
        *,
        layers="all",
        tokens: str = "generated",
        reduce: str = "none",
        dtype: torch.dtype | None = None,
        max_new_tokens: int = ANSWER_TOKENS,
        edits: Edits | None = None,
        **generate_kwargs,
    ) -> Trace:
        """Greedy generation capturing `capture` at the prefill and every decode step.

        ``tokens="generated"`` keeps, for each generated token j, the position whose output
        predicted it (j = 0 is the query position). ``edits`` apply at every step.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise VlmscopeError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
        given = (
            [batch]
            if isinstance(batch, Example)
            else batch.examples
            if isinstance(batch, Batch)
            else (list(batch) if not isinstance(batch, str) else [])
        )
        if any(isinstance(e, Example) and e.answer is not None for e in given):
            raise VlmscopeError("generate() takes prompts without answers; use forward() to score an answer")
        batch = self._batch(batch, with_answers=False)
        if any(tm.answer is not None for tm in batch.token_maps):
            raise VlmscopeError("generate() takes prompts without answers; use forward() to score an answer")
        self.check_fits(batch.token_maps, max_new_tokens)
        batch = batch.to(self.input_device)
        plan = self._plan(capture, layers, tokens, reduce)
        requests = plan.resolve(self.adapter) if plan else []
        run = CaptureRun(
            self.adapter, batch, requests, generating=True, dtype=dtype, edits=resolve_edits(self.adapter, edits)
        )
        kw = {
            "do_sample": False,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
            **generate_kwargs,
        }
        with run.active():
            out = self.model.generate(**batch.inputs, **kw)
        sequences = out.sequences if hasattr(out, "sequences") else out
        new = sequences[:, batch.length :].tolist()
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


DOMAIN_CHECKS = 32  # images of a process the bundled model checks: enough to catch a folder of photos
_domain_checks_left = DOMAIN_CHECKS  # 0 once warned


def shapes_like(image) -> bool:
    """Does `image` look like a shapes scene: a plain light background (the border's median
    colour, light and nearly grey) under at least 60% of the pixels (four of the largest shapes
    cover 34%), and flat colours on the rest (a few colours, not a photo's shading)?"""
    import numpy as np
    from PIL import Image

    a = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.NEAREST), dtype=np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    bg = np.median(border, axis=0)
    near = (np.abs(a - bg) <= 16).all(-1)
    if near.mean() < 0.6 or bg.min() < 180 or bg.max() - bg.min() > 40:
        return False
    fg = a[~near] // 16  # the shapes' pixels, colours quantised to 16 levels a channel
    if len(fg) == 0:
        return True
    _, counts = np.unique(fg[:, 0] * 256 + fg[:, 1] * 16 + fg[:, 2], return_counts=True)
    return bool(np.sort(counts)[::-1][:8].sum() >= 0.8 * len(fg))


def _warn_if_not_shapes(examples: Sequence[Example], images_root) -> None:
    """Warn once per process when the bundled model is shown an image unlike its training data;
    only the first `DOMAIN_CHECKS` images are looked at, so a dataset run does not pay for it."""
    import warnings

    from .inputs import load_image

    global _domain_checks_left
    for ex in examples:
        for item in [*ex.images, *(f for frames in ex.videos for f in frames)]:
            if _domain_checks_left <= 0:
                return
            _domain_checks_left -= 1
            try:
                image = load_image(item, images_root)
            except VlmscopeError:
                continue  # prepare() reports it
            if not shapes_like(image):
                _domain_checks_left = 0
                name = item if isinstance(item, (str, Path)) else "an image"
                warnings.warn(
                    f"the bundled shapes model only knows synthetic scenes of coloured shapes; {str(name)!r} is "
                    "not one, so its answers and maps mean little (load a real model with --model / load(ID))",
                    OutOfDomainWarning,
                    stacklevel=3,
                )
                return


class OutOfDomainWarning(UserWarning):
    """The bundled shapes model was given an image that is not a shapes scene."""


def _examples(examples):
    """A prompt string is a text-only example."""
    if isinstance(examples, str):
        return Example(examples)
    if isinstance(examples, Example):
        return examples
    try:
        items = list(examples)
    except TypeError:
        raise VlmscopeError(
            f"expected an Example, a prompt string or a list of them, got {type(examples).__name__}"
        ) from None
    bad = [type(e).__name__ for e in items if not isinstance(e, (Example, str))]
    if bad:
        raise VlmscopeError(f"expected Examples or prompt strings, got {bad[0]}")
    return [Example(e) if isinstance(e, str) else e for e in items]
