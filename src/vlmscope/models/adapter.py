"""The adapter base: canonical site names -> the real modules of a wrapped HF Qwen-VL model.

A family file only states what differs (names, patch order, deepstack). Nothing here
reimplements the model: hooks go on the modules transformers runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import VlmscopeError

SITE_PATTERNS = {
    "vision.patch_embed": "[Np, Cv] patch embeddings, raster order (t, h, w)",
    "vision.blocks.{i}": "[Np, Cv] output of vision block i, raster order (t, h, w)",
    "vision.merger": "[Nv, D] projected vision tokens (what replaces the image pads)",
    "vision.deepstack.{k}": "[Nv, D] Qwen3-VL deepstack features added after LLM layer k",
    "llm.embed": "[T, D] input embeddings with image features merged (= hidden_states[0])",
    "llm.layers.{i}": "[T, D] residual stream leaving decoder layer i (what layer i+1 receives)",
    "llm.layers.{i}.pre_deepstack": "[T, D] raw output of decoder layer i, before any deepstack injection",
    "llm.layers.{i}.attn": "[H, q, T] attention probabilities of the requested query rows",
    "llm.norm": "[T, D] final normed hidden state (= hidden_states[-1])",
    "logits": "[T, V] output logits",
}


@dataclass(frozen=True)
class Site:
    """A parsed site: ``group`` is the pattern it instantiates, ``index`` its layer/block/k."""

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


def _first_attr(obj, *paths: str):
    for path in paths:
        cur = obj
        for part in path.split("."):
            cur = getattr(cur, part, None)
            if cur is None:
                break
        if cur is not None:
            return cur
    return None


class Adapter:
    """Base adapter; families override the class attributes and the reorder hooks."""

    family = ""  # registry key: the config's model_type
    display_name = ""
    hf_class = ""

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        self.config = model.config
        # transformers >= 4.52 / 5.x: model.model.{visual, language_model}; older 4.5x: model.visual, model.model
        self.visual = _first_attr(model, "model.visual", "visual")
        self.language_model = _first_attr(model, "model.language_model", "model")
        self.lm_head = model.lm_head
        if self.visual is None or getattr(self.language_model, "layers", None) is None:
            raise VlmscopeError(f"cannot find the vision tower and decoder layers of {type(model).__name__}")
        vc = self.config.vision_config
        self.patch_size = int(vc.patch_size)
        self.merge_size = int(vc.spatial_merge_size)
        self.temporal_patch_size = int(getattr(vc, "temporal_patch_size", 2))
        tok = processor.tokenizer
        self.token_ids = {
            "image": int(self.config.image_token_id),
            "video": int(self.config.video_token_id),
            "vision_start": int(self.config.vision_start_token_id),
            "vision_end": int(self.config.vision_end_token_id),
            "im_start": int(tok.convert_tokens_to_ids("<|im_start|>")),
            "im_end": int(tok.convert_tokens_to_ids("<|im_end|>")),
        }
        self.attn_base = self.text_config._attn_implementation  # the kernel behind vlmscope's wrapper

    # ---- shapes -----------------------------------------------------------------------------
    @property
    def text_config(self):
        return getattr(self.config, "text_config", self.config)

    @property
    def num_layers(self) -> int:
        return len(self.language_model.layers)

    @property
    def vision_depth(self) -> int:
        return len(self.visual.blocks)

    @property
    def deepstack_visual_indexes(self) -> list[int]:
        return []

    @property
    def num_deepstack(self) -> int:
        return len(self.deepstack_visual_indexes)

    # ---- sites ------------------------------------------------------------------------------
    def site_groups(self) -> list[str]:
        groups = list(SITE_PATTERNS)
        if not self.num_deepstack:
            groups.remove("vision.deepstack.{k}")
        return groups

    def group_size(self, group: str) -> int:
        if group == "vision.blocks.{i}":
            return self.vision_depth
        if group == "vision.deepstack.{k}":
            return self.num_deepstack
        return self.num_layers

    def parse_site(self, name: str) -> tuple[str, str | None]:
        """Split a user's site name into (group, index text or None for 'every index')."""
        name = name.strip()
        for group in self.site_groups():
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
        raise VlmscopeError(f"unknown site {name!r} for {self.display_name}; sites: {', '.join(self.site_groups())}")

    def list_sites(self) -> list[str]:
        out = []
        for g in self.site_groups():
            if "{" in g:
                out += [g.replace("{i}", str(i)).replace("{k}", str(i)) for i in range(self.group_size(g))]
            else:
                out.append(g)
        return out

    # ---- vision order -----------------------------------------------------------------------
    def patches_to_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, window_order: bool) -> torch.Tensor:
        """[Np, C] in the tower's order -> raster (t, h, w) per image.

        The processor emits patches grouped by 2x2 merge unit: order (t, h/m, w/m, m, m).
        """
        if window_order:
            x = self.undo_window_order(x, grid_thw, unit=self.merge_size**2)
        m, out, start = self.merge_size, [], 0
        for t, h, w in grid_thw.tolist():
            n = t * h * w
            part = x[start:start + n].reshape(t, h // m, w // m, m, m, -1)
            out.append(part.permute(0, 1, 3, 2, 4, 5).reshape(n, -1))
            start += n
        return torch.cat(out)

    def tokens_to_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, window_order: bool) -> torch.Tensor:
        """[Nv, D] merged tokens -> raster (t, h/m, w/m); only windowed towers need work."""
        return self.undo_window_order(x, grid_thw, unit=1) if window_order else x

    def undo_window_order(self, x: torch.Tensor, grid_thw: torch.Tensor, unit: int) -> torch.Tensor:
        return x

    # ---- tokens -----------------------------------------------------------------------------
    def turn_header(self, ids: list[int], pos: int) -> tuple[str, int]:
        """(role, first content position) of the chat turn opened at `pos` (an <|im_start|>)."""
        tok = self.processor.tokenizer
        text, p = "", pos + 1
        while p < len(ids) and "\n" not in text:
            text += tok.decode([ids[p]])
            p += 1
        return text.strip(), p

    # ---- description ------------------------------------------------------------------------
    def describe(self) -> dict:
        tc, vc = self.text_config, self.config.vision_config
        return {
            "family": self.family,
            "name": self.display_name,
            "class": type(self.model).__name__,
            "processor": type(self.processor).__name__,
            "llm": {
                "layers": self.num_layers,
                "hidden_size": tc.hidden_size,
                "heads": tc.num_attention_heads,
                "kv_heads": getattr(tc, "num_key_value_heads", tc.num_attention_heads),
                "vocab_size": tc.vocab_size,
            },
            "vision": {
                "blocks": self.vision_depth,
                "hidden_size": getattr(vc, "embed_dim", None) or vc.hidden_size,
                "out_size": getattr(vc, "out_hidden_size", None) or tc.hidden_size,
                "patch_size": self.patch_size,
                "merge_size": self.merge_size,
                "temporal_patch_size": self.temporal_patch_size,
                "deepstack_visual_indexes": self.deepstack_visual_indexes,
            },
            "token_ids": dict(self.token_ids),
            "attn_implementation": self.attn_base,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "sites": {g: SITE_PATTERNS[g] for g in self.site_groups()},
        }
