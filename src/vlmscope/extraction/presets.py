"""What to extract: each preset is a capture plan, forward or generate, and how one example's
captures become one stored row.

- ``halp``: VF, VT and QT of HALP plus the generated and ground-truth answers, from one generate
  (the hidden states are those of its prefill).
- ``three-point``: the vision tower's last block, the merger and the final norm, as tokens and
  mean-pooled, with the vision-token count of every image.
- ``layers``: the vision tokens at every layer of a layer spec, and per-image norm statistics.
- ``custom``: any sites, layers, tokens and reduction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ..capture.plan import CapturePlan
from ..capture.trace import Trace
from ..data.sources import Row
from ..errors import VlmscopeError
from ..specs import parse_reduction, parse_selection
from ..store.layout import Record

PRESETS = ("halp", "three-point", "layers", "custom")
NORM_STATS = ("mean", "std", "min", "max")


@dataclass
class Preset:
    """Base: a plan, whether it generates, and the conversion of a trace into records."""

    name: str = ""
    layers: str = "all"
    generate: bool = False
    max_new_tokens: int = 16
    needs_image: bool = True

    def plan(self) -> CapturePlan:
        raise NotImplementedError

    def describe(self) -> dict:
        out = {"name": self.name, "layers": self.layers, "generate": self.generate}
        return {**out, "max_new_tokens": self.max_new_tokens} if self.generate else out

    def check(self, adapter) -> None:
        """Resolve the plan against the model now, so a bad site or layer fails before any row."""
        self.plan().resolve(adapter)

    def run(self, scope, batch, dtype: torch.dtype) -> Trace:
        if self.generate:
            return scope.generate(batch, self.plan(), dtype=dtype, max_new_tokens=self.max_new_tokens)
        return scope.forward(batch, self.plan(), dtype=dtype)

    def records(self, trace: Trace, rows: list[Row]) -> list[Record]:
        out = []
        for b, row in enumerate(rows):
            tm = trace.token_maps[b]
            rec = Record(
                row.index,
                row.id,
                fields={
                    "question": row.question,
                    "gt_answer": row.answer,
                    "images": json.dumps(row.image_refs),
                    "token_map": json.dumps(tm.summary()),
                },
            )
            if trace.generated_text is not None:
                rec.fields["generated_answer"] = trace.generated_text[b]
            rec.ragged["visual_token_lens"] = np.array([v.num_tokens for v in tm.visuals], dtype=np.int64)
            rec.ragged["grid_thw"] = np.array([v.grid_thw for v in tm.visuals], dtype=np.int64).reshape(-1, 3)
            self.fill(rec, trace, b)
            out.append(rec)
        return out

    def fill(self, rec: Record, trace: Trace, b: int) -> None:
        """Reduced captures are fixed-size arrays; token-level ones are ragged."""
        for key, per_example in trace.captures.items():
            x = per_example[b].numpy()
            (rec.ragged if self.is_ragged(key) else rec.arrays)[key] = x

    def is_ragged(self, key: str) -> bool:
        return False


@dataclass
class Halp(Preset):
    """VF: mean of the last vision block's output (before the merger); VT / QT: ``llm.layers.{i}``
    at the last image token / the query position, for the ``halp`` layer set."""

    name: str = "halp"
    layers: str = "halp"
    generate: bool = True

    def plan(self) -> CapturePlan:
        return (
            CapturePlan.of("vision.blocks", layers="-1", reduce="mean", name="vf")
            .add("llm.layers", layers=self.layers, tokens="vision_last", reduce="last", name="vt")
            .add("llm.layers", layers=self.layers, tokens="query", reduce="last", name="qt")
        )


@dataclass
class ThreePoint(Preset):
    """Before the projector, after it, after the LLM: tokens and their means."""

    name: str = "three-point"

    def plan(self) -> CapturePlan:
        plan = CapturePlan()
        for reduce, name in (("none", None), ("mean", "mean")):
            plan.add("vision.blocks", layers="-1", reduce=reduce, name=name)
            plan.add("vision.merger", reduce=reduce, name=name)
            plan.add("llm.norm", reduce=reduce, name=name)
        return plan

    def describe(self) -> dict:
        return {"name": self.name, "generate": False}

    def is_ragged(self, key: str) -> bool:
        return not key.startswith("mean/")


@dataclass
class Layers(Preset):
    """Vision tokens at each layer of the spec, and the mean / std / min / max of their L2 norms
    per image (``norms/llm.layers.{i}``: [n_images, 4])."""

    name: str = "layers"

    def plan(self) -> CapturePlan:
        return CapturePlan.of("llm.layers", layers=self.layers, tokens="vision")

    def is_ragged(self, key: str) -> bool:
        return True

    def fill(self, rec: Record, trace: Trace, b: int) -> None:
        super().fill(rec, trace, b)
        sizes = [v.num_tokens for v in trace.token_maps[b].visuals]
        for key, per_example in trace.captures.items():
            norms = per_example[b].float().norm(dim=-1)
            stats = [
                torch.stack([p.mean(), p.std(unbiased=False), p.min(), p.max()]) for p in torch.split(norms, sizes)
            ]
            rec.ragged[f"norms/{key}"] = torch.stack(stats).numpy()


@dataclass
class Custom(Preset):
    """``--sites --layers --tokens --reduce``; generate with ``--generate`` or ``tokens=generated``."""

    name: str = "custom"
    sites: str = ""
    tokens: str = "all"
    reduce: str = "none"

    def __post_init__(self):
        if not self.sites:
            raise VlmscopeError("the custom preset needs --sites, e.g. --sites vision.merger,llm.layers")
        sel, self.reduce = parse_selection(self.tokens), parse_reduction(self.reduce)
        self.tokens = str(sel)
        self.generate = self.generate or sel.kind == "generated"
        self.needs_image = sel.kind in ("vision", "vision_last", "image") or any(
            s.strip().startswith("vision.") for s in self.sites.split(",")
        )

    def plan(self) -> CapturePlan:
        return CapturePlan.of(self.sites, layers=self.layers, tokens=self.tokens, reduce=self.reduce)

    def check(self, adapter) -> None:
        for req in self.plan().resolve(adapter):
            if req.site.is_attention:
                raise VlmscopeError(
                    f"site {req.key!r}: extract stores hidden states, not attention maps; "
                    "use the attention-map tools for attention"
                )

    def describe(self) -> dict:
        return {**super().describe(), "sites": self.sites, "tokens": self.tokens, "reduce": self.reduce}

    def is_ragged(self, key: str) -> bool:
        return self.reduce == "none"


def make_preset(
    name: str,
    *,
    layers: str | None = None,
    sites: str | None = None,
    tokens: str | None = None,
    reduce: str | None = None,
    generate: bool = False,
    max_new_tokens: int = 16,
) -> Preset:
    """A preset by name; `layers` overrides its default layer spec. Sites, tokens and reduce are
    for the custom preset only."""
    if name not in PRESETS:
        raise VlmscopeError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    if max_new_tokens < 1:
        raise VlmscopeError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if name != "custom":
        extra = [
            flag
            for flag, v in (("--sites", sites), ("--tokens", tokens), ("--reduce", reduce), ("--generate", generate))
            if v
        ]
        if extra:
            raise VlmscopeError(f"{', '.join(extra)} apply to the custom preset only, not {name!r}")
    if name == "halp":
        return Halp(layers=layers or "halp", max_new_tokens=max_new_tokens)
    if name == "three-point":
        if layers:
            raise VlmscopeError("--layers does not apply to the three-point preset (last vision block, merger, norm)")
        return ThreePoint()
    if name == "layers":
        return Layers(layers=layers or "all")
    return Custom(
        layers=layers or "all",
        sites=sites or "",
        tokens=tokens or "all",
        reduce=reduce or "none",
        generate=generate,
        max_new_tokens=max_new_tokens,
    )
