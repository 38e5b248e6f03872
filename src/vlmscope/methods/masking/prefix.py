"""The clean run that every perturbed run of one example starts from: the clean input embeddings, mRoPE positions,
the clean KV cache of every position and the clean log-probabilities of the answer.

Perturbed runs call the decoder directly with input embeddings, so a run can start at any
position on top of a slice of the clean cache: nothing before the first changed position differs
from the clean run under a causal mask, whether the change is a knockout or a new embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ...inputs import Batch
from ...tokenmap import TokenMap

if TYPE_CHECKING:
    from ...scope import Scope


@dataclass
class CleanRun:
    scope: Scope
    tm: TokenMap
    ids: torch.Tensor  # [T] prompt + answer
    positions: torch.Tensor  # [3, 1, T] mRoPE positions
    embeds: torch.Tensor  # [1, T, D] input embeddings with the image features merged
    visual: torch.Tensor  # [T] bool: image placeholder positions
    deepstack: list[torch.Tensor] | None  # Qwen3-VL: per level [N_visual, D], sequence order
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    answer: torch.Tensor  # [n] answer ids, scored teacher-forced
    cache: Any  # DynamicCache of the clean run, all T positions
    clean_logp: torch.Tensor = field(init=False)  # [n, vocab] float32, set by clean_run

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    @property
    def rows(self) -> list[int]:
        """Positions whose outputs predict the answer tokens."""
        return self.tm.predicting_positions(int(self.answer.shape[0]))

    def visual_rows(self, positions) -> torch.Tensor:
        """Row index into the deepstack features of each image position in `positions`."""
        rank = torch.cumsum(self.visual.long(), 0) - 1
        return rank[torch.as_tensor(positions, dtype=torch.long, device=rank.device)]


@torch.inference_mode()
def clean_run(scope: Scope, batch: Batch, answer_ids: list[int]) -> CleanRun:
    """For a one-prompt batch (no answer): run the vision tower once and the clean teacher-forced
    pass over prompt + answer once, keeping its cache."""
    batch = batch.to(scope.input_device)
    inp, dev = batch.inputs, scope.input_device
    answer = torch.tensor(answer_ids, dtype=torch.long, device=dev)
    ids = torch.cat([inp["input_ids"][0], answer])
    grid = inp.get("image_grid_thw")
    embeds = scope.adapter.language_model.embed_tokens(ids)[None]
    prompt_visual = inp["input_ids"][0] == scope.adapter.token_ids["image"]
    visual = torch.cat([prompt_visual, torch.zeros_like(answer, dtype=torch.bool)])  # answer positions are text
    deepstack = None
    if grid is not None:
        mm = torch.cat([inp["mm_token_type_ids"][0], torch.zeros_like(answer).to(inp["mm_token_type_ids"].dtype)])
        positions = scope.adapter.rope_positions(ids[None], mm[None], grid)
        image_embeds, deepstack = vision_features(scope, inp["pixel_values"], grid)
        embeds[0, visual] = torch.cat(image_embeds).to(embeds.dtype)
        if deepstack is not None:
            deepstack = [torch.cat(level).to(dev, embeds.dtype) for level in deepstack]
    else:
        positions = torch.arange(len(ids), device=dev).view(1, 1, -1).expand(3, 1, -1)
    ctx = CleanRun(
        scope,
        batch.token_maps[0].with_answer(answer_ids),
        ids,
        positions,
        embeds,
        visual,
        deepstack,
        inp.get("pixel_values"),
        grid,
        answer,
        new_cache(scope),
    )
    hidden = run_decoder(ctx, embeds, 0, ctx.cache, ctx.deepstack)
    ctx.clean_logp = log_probs(scope, hidden[:, ctx.rows])[0]
    return ctx


def vision_features(scope: Scope, pixel_values: torch.Tensor, grid: torch.Tensor):
    """(merger output per image, deepstack features per level and image or None)."""
    features, deepstack = scope.adapter.image_features(pixel_values, grid)
    return [e.to(scope.input_device) for e in features], deepstack or None


def new_cache(scope: Scope, ctx: CleanRun | None = None, start: int = 0, copies: int = 1):
    """An empty cache, or the clean cache's first `start` positions shared by `copies` variants."""
    from transformers import DynamicCache

    config = scope.adapter.text_config
    if ctx is None or start == 0:
        return DynamicCache(config=config)
    data = [
        (layer.keys[:, :, :start].expand(copies, -1, -1, -1), layer.values[:, :, :start].expand(copies, -1, -1, -1))
        for layer in ctx.cache.layers
    ]
    return DynamicCache(ddp_cache_data=data, config=config)


def run_decoder(
    ctx: CleanRun,
    embeds: torch.Tensor,
    start: int,
    cache,
    deepstack: list[torch.Tensor] | None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decoder pass over positions [start, start + L) of a batch of variants; final normed states.

    ``deepstack`` holds the features of the image positions in the run, variant after variant
    (the order in which the model adds them to ``hidden[visual_pos_masks]``).
    """
    v, length = embeds.shape[:2]
    if positions is None:
        positions = ctx.positions[:, :, start : start + length].expand(3, v, -1)
    visual = ctx.visual[start : start + length]
    adapter = ctx.scope.adapter
    kw = adapter.decoder_kwargs(visual[None].expand(v, -1), deepstack) | adapter.cache_kwargs(cache)
    out = adapter.language_model(inputs_embeds=embeds, position_ids=positions, use_cache=True, **kw)
    return out.last_hidden_state


def log_probs(scope: Scope, hidden: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(scope.adapter.lm_head(hidden).float(), dim=-1)
