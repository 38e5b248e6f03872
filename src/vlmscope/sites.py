"""Canonical site names and the declarative table that maps them to a model's modules.

A site group (``llm.layers.{i}``) names the same thing in every family; each adapter lists, as
data, where that thing lives in its Hugging Face model (a module path), which hook reads it (the
module's input or output), and its layout:

- ``sequence``: LLM positions, [B, L, D] per step of a forward or a generate;
- ``patches``: vision-tower patches of every image of the batch, [Np, C];
- ``tokens``: merged vision tokens (what replaces the image pads), [Nv, D];
- ``attention``: attention probabilities, read beside the attention kernel, never by a hook.

``ready`` says when the value exists, which is what early stop needs: ``decoder`` (before the
first decoder layer), ``layer`` (once decoder layer i has run), ``norm`` (after the final norm),
``end`` (the model's last output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import VlmscopeError

LAYOUTS = ("sequence", "patches", "tokens", "attention")
READY = ("decoder", "layer", "norm", "end")


@dataclass(frozen=True)
class SiteSpec:
    """Where one site group lives. ``module`` is a dotted path from the HF model with ``{i}``
    (this index) or ``{next}`` (index + 1) filled in; the path ``@stream.{next}`` is the input of
    the decoder chain's element i+1, where the chain is [layers..., final norm, lm_head].
    ``order`` of vision sites: ``processor`` (the processor's 2x2 merge-unit order) or ``tower``
    (whatever order the tower computes in; adapters with windowed towers undo it)."""

    group: str
    module: str
    hook: str  # "pre" (module input), "post" (module output) or "attention"
    layout: str
    ready: str
    doc: str
    order: str = "processor"
    editable: bool = True
    counts: str = "layers"  # what {i} runs over: layers (decoder), blocks (vision), deepstack (levels)

    def path(self, index: int | None) -> str:
        if index is None:
            return self.module
        return self.module.replace("{next}", str(index + 1)).replace("{i}", str(index)).replace("{k}", str(index))

    @property
    def indexed(self) -> bool:
        return "{" in self.group


@dataclass(frozen=True)
class Site:
    """A concrete site: a group and, for indexed groups, its layer / block / level."""

    group: str
    index: int | None = None

    @property
    def name(self) -> str:
        return self.group.replace("{i}", str(self.index)).replace("{k}", str(self.index))

    @property
    def is_vision(self) -> bool:
        return self.group.startswith("vision.")

    @property
    def is_attention(self) -> bool:
        return self.group == "llm.layers.{i}.attn"

    def __str__(self) -> str:
        return self.name


# The decoder chain paths every Qwen-VL family shares (transformers 5.x layout).
VISUAL = "model.visual"
DECODER = "model.language_model"

BASE_SITES: tuple[SiteSpec, ...] = (
    SiteSpec(
        "vision.patch_embed",
        f"{VISUAL}.patch_embed",
        "post",
        "patches",
        "decoder",
        "[Np, Cv] patch embeddings, raster order (t, h, w)",
    ),
    SiteSpec(
        "vision.blocks.{i}",
        f"{VISUAL}.blocks.{{i}}",
        "post",
        "patches",
        "decoder",
        "[Np, Cv] output of vision block i, raster order (t, h, w)",
        order="tower",
        counts="blocks",
    ),
    SiteSpec(
        "vision.merger",
        f"{VISUAL}.merger",
        "post",
        "tokens",
        "decoder",
        "[Nv, D] projected vision tokens (what replaces the image pads)",
        order="tower",
    ),
    SiteSpec(
        "llm.embed",
        "@stream.0",
        "pre",
        "sequence",
        "decoder",
        "[T, D] input embeddings with image features merged (= hidden_states[0])",
    ),
    SiteSpec(
        "llm.layers.{i}",
        "@stream.{next}",
        "pre",
        "sequence",
        "layer",
        "[T, D] residual stream leaving decoder layer i (what layer i+1 receives)",
    ),
    SiteSpec(
        "llm.layers.{i}.pre_deepstack",
        f"{DECODER}.layers.{{i}}",
        "post",
        "sequence",
        "layer",
        "[T, D] raw output of decoder layer i, before any deepstack injection",
    ),
    SiteSpec(
        "llm.layers.{i}.attn",
        f"{DECODER}.layers.{{i}}.self_attn",
        "attention",
        "attention",
        "layer",
        "[H, q, T] attention probabilities of the requested query rows",
        editable=False,
    ),
    SiteSpec(
        "llm.layers.{i}.heads",
        f"{DECODER}.layers.{{i}}.self_attn.o_proj",
        "pre",
        "sequence",
        "layer",
        "[T, H*d] every head's attention output, concatenated, before the output projection",
    ),
    SiteSpec(
        "llm.norm",
        f"{DECODER}.norm",
        "post",
        "sequence",
        "norm",
        "[T, D] final normed hidden state (= hidden_states[-1])",
    ),
    SiteSpec("logits", "lm_head", "post", "sequence", "end", "[T, V] output logits"),
)


def match_group(name: str, groups: list[str]) -> tuple[str, str | None] | None:
    """(group, index text or None for 'every index') if `name` instantiates one of `groups`."""
    name = name.strip()
    for group in groups:
        if "{" not in group:
            if name == group:
                return group, None
            continue
        head, tail = group.split(".{")[0], group.split("}")[1]  # 'llm.layers', '.attn'
        if name == head + tail:
            return group, None  # e.g. 'llm.layers': every layer of the layer spec
        m = re.fullmatch(re.escape(head) + r"\.(\{[ik]\}|\*|-?\d+)" + re.escape(tail), name)
        if m:
            idx = m.group(1)
            return group, None if idx[0] in "{*" else idx
    return None


def check_table(sites: tuple[SiteSpec, ...]) -> None:
    """Fail early on a malformed adapter table (a new family's most likely mistake)."""
    seen = set()
    for s in sites:
        if s.layout not in LAYOUTS or s.ready not in READY or s.hook not in ("pre", "post", "attention"):
            raise VlmscopeError(
                f"bad site table entry {s.group}: layout {s.layout!r}, ready {s.ready!r}, hook {s.hook!r}"
            )
        if s.counts not in ("layers", "blocks", "deepstack"):
            raise VlmscopeError(f"bad site table entry {s.group}: counts {s.counts!r}")
        if s.group in seen:
            raise VlmscopeError(f"site group {s.group} declared twice")
        seen.add(s.group)
