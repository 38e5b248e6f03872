"""The adapter base: one family's sites as data, and every call into Hugging Face internals.

A family file states what differs: its site table (``sites``), its raster reordering, its rope
positions, image features and decoder keyword arguments, and a tiny config for tests. Nothing
here reimplements the model: hooks go on the modules transformers runs, and the engine and the
methods reach the model only through these methods.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..errors import VlmscopeError
from ..sites import BASE_SITES, Site, SiteSpec, match_group
from .tiny_parts import CHAT_TEMPLATE


def _walk(obj, path: str):
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


class Adapter:
    """Base adapter; families override the class attributes and the methods that differ."""

    family = ""  # registry key: the config's model_type
    display_name = ""
    hf_class = ""
    sites: tuple[SiteSpec, ...] = BASE_SITES

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        self.config = model.config
        try:
            self.visual = model.model.visual
            self.language_model = model.model.language_model
            self.lm_head = model.lm_head
            self.language_model.layers  # noqa: B018 (presence check)
        except AttributeError:
            raise VlmscopeError(
                f"cannot find the vision tower and decoder layers of {type(model).__name__}; "
                "vlmscope needs transformers >= 5 module names (model.visual, model.language_model)"
            ) from None
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
        self._specs = {s.group: s for s in self.sites}

    # ---- shapes -----------------------------------------------------------------------------
    @property
    def text_config(self):
        return self.config.text_config

    @property
    def num_layers(self) -> int:
        return len(self.language_model.layers)

    @property
    def num_heads(self) -> int:
        return int(self.text_config.num_attention_heads)

    @property
    def vision_depth(self) -> int:
        return len(self.visual.blocks)

    @property
    def deepstack_visual_indexes(self) -> list[int]:
        return []

    @property
    def num_deepstack(self) -> int:
        return len(self.deepstack_visual_indexes)

    def value_readout(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """[N, D]: what decoder layer `layer`'s attention adds to a query that attends only to a key
        whose stream entering the layer is `h` [N, D], summed over heads (the OV circuit:
        o_proj(v_proj(input_layernorm(h))), grouped key/value heads repeated to the query heads)."""
        block = self.language_model.layers[layer]
        attn = block.self_attn
        v = attn.v_proj(block.input_layernorm(h))
        head_dim = int(getattr(attn, "head_dim", v.shape[-1] // self.text_config.num_key_value_heads))
        v = v.view(*v.shape[:-1], -1, head_dim)
        v = v.repeat_interleave(attn.o_proj.in_features // (v.shape[-2] * head_dim), dim=-2)
        return attn.o_proj(v.flatten(-2))

    # ---- sites ------------------------------------------------------------------------------
    def site_groups(self) -> list[str]:
        return list(self._specs)

    def site_spec(self, group: str) -> SiteSpec:
        return self._specs[group]

    def group_size(self, group: str) -> int:
        counts = self._specs[group].counts
        return {"blocks": self.vision_depth, "deepstack": self.num_deepstack}.get(counts, self.num_layers)

    def parse_site(self, name: str) -> tuple[str, str | None]:
        """Split a user's site name into (group, index text or None for 'every index')."""
        found = match_group(name, self.site_groups())
        if found is None:
            raise VlmscopeError(
                f"unknown site {name!r} for {self.display_name}; sites: {', '.join(self.site_groups())}"
            )
        return found

    def site(self, name: str) -> Site:
        """A concrete site from its full name (``llm.layers.3``); the index must be in range."""
        group, idx = self.parse_site(name)
        if self._specs[group].indexed:
            n = self.group_size(group)
            if idx is None:
                raise VlmscopeError(
                    f"site {name!r} needs an index, e.g. {group.replace('{i}', '0').replace('{k}', '0')}"
                )
            i = int(idx)
            if not -n <= i < n:
                raise VlmscopeError(f"site {name!r} out of range: {self.display_name} has {n} of them (0..{n - 1})")
            return Site(group, i % n)
        return Site(group)

    def list_sites(self) -> list[str]:
        out = []
        for g in self.site_groups():
            if "{" in g:
                out += [Site(g, i).name for i in range(self.group_size(g))]
            else:
                out.append(g)
        return out

    def decoder_chain(self) -> list[torch.nn.Module]:
        """[layers..., final norm, lm_head]: module k receives ``llm.layers.{k-1}``."""
        return [*self.language_model.layers, self.language_model.norm, self.lm_head]

    def module(self, site: Site) -> torch.nn.Module:
        """The module whose hook reads `site`."""
        path = self._specs[site.group].path(site.index)
        if path.startswith("@stream."):
            return self.decoder_chain()[int(path.split(".")[1])]
        return _walk(self.model, path)

    def stream_index(self, site: Site) -> int | None:
        """Decoder-chain index before which `site` is known (early stop), None: only at the end."""
        ready = self._specs[site.group].ready
        if ready == "decoder":
            return 0
        if ready == "layer":
            assert site.index is not None, "a per-layer site has an index"
            return int(site.index) + 1
        if ready == "norm":
            return self.num_layers + 1
        return None

    # ---- vision order -----------------------------------------------------------------------
    def to_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, spec: SiteSpec) -> torch.Tensor:
        """A vision site's rows in the order the module emits them -> raster order per image."""
        if spec.layout == "patches":
            return self._merge_units_to_raster(x, grid_thw)
        return x

    def from_raster(self, x: torch.Tensor, grid_thw: torch.Tensor, spec: SiteSpec) -> torch.Tensor:
        """Inverse of `to_raster` (edits are written in raster order and put back)."""
        if spec.layout == "patches":
            return self._raster_to_merge_units(x, grid_thw)
        return x

    def _merge_units_to_raster(self, x: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        # the processor emits patches grouped by 2x2 merge unit: order (t, h/m, w/m, m, m)
        m, out, start = self.merge_size, [], 0
        for t, h, w in grid_thw.tolist():
            n = t * h * w
            part = x[start : start + n].reshape(t, h // m, w // m, m, m, -1)
            out.append(part.permute(0, 1, 3, 2, 4, 5).reshape(n, -1))
            start += n
        return torch.cat(out)

    def _raster_to_merge_units(self, x: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        m, out, start = self.merge_size, [], 0
        for t, h, w in grid_thw.tolist():
            n = t * h * w
            part = x[start : start + n].reshape(t, h // m, m, w // m, m, -1)
            out.append(part.permute(0, 1, 3, 2, 4, 5).reshape(n, -1))
            start += n
        return torch.cat(out)

    # ---- the model's own computations, for runs that call the decoder directly ---------------
    def rope_positions(
        self, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None, image_grid_thw: torch.Tensor | None
    ) -> torch.Tensor:
        """[3, B, T] mRoPE positions of `input_ids`, as the model computes them."""
        positions, _ = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw
        )
        return positions

    def image_features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor):
        """(merger output per image, in the order the LLM sees them; deepstack features per level
        and image, or None for families without deepstack)."""
        device = next(self.visual.parameters()).device
        out = self.model.model.get_image_features(pixel_values.to(device), grid_thw.to(device))
        return list(out.pooler_output), None

    def cache_kwargs(self, cache) -> dict[str, Any]:
        """`cache` under the name the installed transformers' decoder takes it by: ``cache`` from
        5.24 on, ``past_key_values`` before (the old name still works there, with a warning)."""
        import inspect

        name = getattr(self, "_cache_name", None)
        if name is None:
            params = inspect.signature(self.language_model.forward).parameters
            name = self._cache_name = "cache" if "cache" in params else "past_key_values"
        return {name: cache}

    def decoder_kwargs(self, visual_mask: torch.Tensor, deepstack: list[torch.Tensor] | None) -> dict[str, Any]:
        """Extra keyword arguments of a direct decoder call over positions whose image tokens are
        `visual_mask` [B, L] (deepstack: the features of those positions, per level)."""
        return {}

    # ---- tokens -----------------------------------------------------------------------------
    def turn_header(self, ids: list[int], pos: int) -> tuple[str, int]:
        """(role, first content position) of the chat turn opened at `pos` (an <|im_start|>)."""
        tok = self.processor.tokenizer
        text, p = "", pos + 1
        while p < len(ids) and "\n" not in text:
            text += tok.decode([ids[p]])
            p += 1
        return text.strip(), p

    # ---- tiny random models for tests --------------------------------------------------------
    tiny_patch: ClassVar[int]  # vision patch size of the tiny test models

    @classmethod
    def tiny_config(
        cls,
        tokenizer,
        *,
        text_layers: int = 3,
        vision_depth: int = 2,
        hidden: int = 64,
        heads: int = 4,
        kv_heads: int = 2,
        vision_hidden: int = 32,
        vision_heads: int = 2,
    ):
        """Config of a small random model of this family whose token ids match `tokenizer`.
        Every family takes these sizes; a family may add its own keywords."""
        raise NotImplementedError

    @classmethod
    def tiny_processor_classes(cls) -> tuple[type, type]:
        """(processor class, video processor class) of this family; imported on use."""
        raise NotImplementedError

    @classmethod
    def tiny_processor(cls, tokenizer, size: dict):
        """The family's processor around `tokenizer`, limited to small images."""
        from transformers import Qwen2VLImageProcessor

        processor, video = cls.tiny_processor_classes()
        kw: dict[str, Any] = dict(patch_size=cls.tiny_patch, merge_size=2, temporal_patch_size=2, size=size)
        return processor(
            image_processor=Qwen2VLImageProcessor(**kw),
            tokenizer=tokenizer,
            video_processor=video(**kw),
            chat_template=CHAT_TEMPLATE,
        )

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
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "sites": {s.group: s.doc for s in self.sites},
        }
