"""Per-generated-token maps over the image: raw attention, rollout, gradient-weighted relevancy.

Raw maps come from attention rows captured during the same generate call that produces the
answer (the model keeps SDPA, only image columns are kept). Rollout and relevancy need every
row of the chosen layers, so they run one teacher-forced forward over prompt + answer: rollout
streams through the layers with a [T, Nv] state; relevancy computes eager, differentiable
attention on the chosen layers only and takes one gradient per generated token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture.attention import EagerComputing, EagerLayers, Recording, row_probabilities
from ..capture.plan import CapturePlan
from ..errors import VlmscopeError
from ..inputs import Example
from ..specs import parse_layers
from ..tokenmap import TokenMap
from . import sinks as sink_tools
from .attention_flow import aggregate, identity_columns, relevancy_step, rollout_step

METHODS = ("raw", "rollout", "gradient")


@dataclass
class AttentionMaps:
    """``maps[j]`` is generated token j's weight on every vision token of the example
    (all visuals concatenated, raster order); ``visual_map(j, k)`` reshapes it to visual k's grid."""

    method: str
    layers: list[int]
    heads: list[int]
    head_agg: str
    layer_agg: str
    token_map: TokenMap
    token_ids: list[int]
    tokens: list[str]
    answer: str
    maps: np.ndarray  # [n_tokens, Nv]
    text_maps: np.ndarray | None = None  # [n_tokens, n_text] when asked for
    sinks: list[int] = field(default_factory=list)
    layer_maps: np.ndarray | None = None  # raw: [L, n_tokens, Nv] per selected layer, heads aggregated
    images: list[Any] = field(default_factory=list, repr=False)  # PIL images / first frames, per visual

    def visual_map(self, j: int, visual: int = 0) -> np.ndarray:
        """[t, h, w] map of generated token j over visual k's merged token grid."""
        starts = np.cumsum([0] + [v.num_tokens for v in self.token_map.visuals])
        v = self.token_map.visual(visual)
        return self.maps[j, starts[visual]:starts[visual + 1]].reshape(v.merged_thw)

    def pixel_map(self, j: int, visual: int = 0, frame: int = 0) -> np.ndarray:
        """[H, W] map at the original image's resolution (each token fills its pixel box)."""
        from ..viz.overlay import to_pixels

        return to_pixels(self.visual_map(j, visual)[frame], self.token_map.visual(visual).original_size)

    def total(self) -> np.ndarray:
        return self.maps.sum(0)

    def to_dict(self) -> dict:
        return {
            "method": self.method, "layers": self.layers, "heads": self.heads, "head_agg": self.head_agg,
            "layer_agg": self.layer_agg, "answer": self.answer, "tokens": self.tokens, "token_ids": self.token_ids,
            "maps": self.maps.tolist(), "text_maps": None if self.text_maps is None else self.text_maps.tolist(),
            "sinks": self.sinks, "token_map": self.token_map.summary(),
        }

    def save(self, out_dir, formats=("png", "npz", "html")) -> dict[str, str]:
        from ..viz.render import save_maps

        return save_maps(self, out_dir, formats)


def explain(scope, example: Example, method: str = "raw", layers="all", heads="all", head_agg: str = "mean",
            layer_agg: str = "mean", max_new_tokens: int = 32, exclude_sinks: bool = False,
            keep_text: bool = False, dtype: torch.dtype = torch.float32, residual: float = 0.5) -> AttentionMaps:
    """Generate (or teacher-force ``example.answer``) and map every answer token onto the image(s)."""
    if method not in METHODS:
        raise VlmscopeError(f"unknown map method {method!r}; choose from {', '.join(METHODS)}")
    ad = scope.adapter
    layer_ids = parse_layers(layers, ad.num_layers)
    n_heads = ad.text_config.num_attention_heads
    head_ids = parse_layers(heads, n_heads, "head")
    columns = "vision+text" if keep_text else "vision"

    if method != "raw":
        tm, answer_ids = _answer(scope, example, max_new_tokens)
        return explain_ids(scope, example, tm, answer_ids, method, layers=layer_ids, heads=head_ids,
                           head_agg=head_agg, exclude_sinks=exclude_sinks, keep_text=keep_text, residual=residual)
    plan = CapturePlan.of("llm.layers.attn", layers=layer_ids, tokens="generated", columns=columns)
    if example.answer is None:
        trace = scope.generate(example, plan, max_new_tokens=max_new_tokens, dtype=dtype)
        tm, answer_ids = trace.token_maps[0], trace.generated_ids[0]
    else:
        trace = scope.forward(example, plan, dtype=dtype)
        tm = trace.token_maps[0]
        answer_ids = tm.input_ids[tm.answer[0]:tm.answer[1]]
    stack = torch.stack([trace[f"llm.layers.{i}.attn"][0][head_ids].float() for i in layer_ids])  # [L, h, n, C]
    per_layer = aggregate(stack, head_agg, dim=1)
    cols = aggregate(per_layer, layer_agg, dim=0).numpy()  # [n, C]
    result = _result(scope, example, method, layer_ids, head_ids, head_agg, layer_agg, tm, answer_ids, cols,
                     keep_text, exclude_sinks)
    vision = set(tm.vision_positions())
    vis_idx = [i for i, p in enumerate(_key_columns(tm, columns).tolist()) if p in vision]
    result.layer_maps = per_layer.numpy()[:, :, vis_idx]
    return result


def explain_ids(scope, example: Example, tm: TokenMap, answer_ids: list[int], method: str, layers="all",
                heads="all", head_agg: str = "mean", exclude_sinks: bool = False, keep_text: bool = False,
                residual: float = 0.5) -> AttentionMaps:
    """Rollout or relevancy maps of given answer token ids (e.g. the ones a generate produced),
    computed in one teacher-forced forward over `tm.input_ids`."""
    if method not in ("rollout", "gradient"):
        raise VlmscopeError(f"explain_ids computes rollout or gradient maps, not {method!r}")
    if not (example.images or example.videos):
        raise VlmscopeError("attention maps need an image or video in the example")
    ad = scope.adapter
    layer_ids = parse_layers(layers, ad.num_layers)
    head_ids = parse_layers(heads, ad.text_config.num_attention_heads, "head")
    columns = "vision+text" if keep_text else "vision"
    flow = _rollout if method == "rollout" else _relevancy
    cols = flow(scope, example, tm, answer_ids, layer_ids, head_ids, head_agg, columns, residual)
    return _result(scope, example, method, layer_ids, head_ids, head_agg, "flow", tm, answer_ids, cols,
                   keep_text, exclude_sinks)


def _answer(scope, example: Example, max_new_tokens: int) -> tuple[TokenMap, list[int]]:
    """The answer to explain: the given one (teacher-forced) or the model's own greedy answer."""
    if example.answer is not None:
        tm = scope.prepare(example).token_maps[0]
        return tm, tm.input_ids[tm.answer[0]:tm.answer[1]]
    trace = scope.generate(example, None, max_new_tokens=max_new_tokens)
    return trace.token_maps[0], trace.generated_ids[0]


def _forced_inputs(scope, example: Example, tm: TokenMap) -> dict:
    """Model inputs for prompt + answer ids (the answer as token ids, not re-tokenised text)."""
    batch = scope.prepare(Example(example.prompt, example.images, example.videos, system=example.system))
    inputs = {k: v for k, v in batch.inputs.items()}
    extra = len(tm.input_ids) - batch.length
    ids = torch.tensor([tm.input_ids])
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros(1, extra, dtype=inputs["mm_token_type_ids"].dtype)], 1)
    return {k: v.to(scope.input_device) if torch.is_tensor(v) else v for k, v in inputs.items()}


def _key_columns(tm: TokenMap, columns: str) -> torch.Tensor:
    pos = tm.vision_positions() + (tm.text_positions() if columns == "vision+text" else [])
    return torch.tensor(sorted(pos), dtype=torch.long)


class _RolloutObserver:
    def __init__(self, layers, heads, head_agg, m, residual, chunk: int = 512):
        self.layers, self.heads, self.head_agg, self.m, self.residual, self.chunk = set(layers), heads, head_agg, m, residual, chunk

    def observe(self, module, query, key, mask, scaling):
        if module.layer_idx not in self.layers:
            return
        t = query.shape[2]
        rows = []
        for s in range(0, t, self.chunk):  # bound the transient [H, rows, T] block
            r = torch.arange(s, min(s + self.chunk, t), device=query.device)
            p = row_probabilities(query[:, self.heads], key[:, self._kv_heads(query, key)], mask, r, scaling)[0]
            rows.append(aggregate(p, self.head_agg, dim=0))
        self.m = rollout_step(self.m, torch.cat(rows), self.residual)

    def _kv_heads(self, query, key):
        n_rep = query.shape[1] // key.shape[1]
        return [h // n_rep for h in self.heads]


@torch.inference_mode()
def _rollout(scope, example, tm, answer_ids, layers, heads, head_agg, columns, residual) -> np.ndarray:
    inputs = _forced_inputs(scope, example, tm)
    cols = _key_columns(tm, columns)
    obs = _RolloutObserver(layers, heads, head_agg, identity_columns(tm.length, cols, device=scope.input_device),
                           residual)
    with Recording(obs):
        scope.model(**inputs, use_cache=False)
    rows = tm.predicting_positions(len(answer_ids))
    return obs.m[rows].float().cpu().numpy()


def _relevancy(scope, example, tm, answer_ids, layers, heads, head_agg, columns, residual) -> np.ndarray:
    inputs = _forced_inputs(scope, example, tm)
    cols = _key_columns(tm, columns)
    eager = EagerLayers(layers)
    first = scope.adapter.language_model.layers[0]
    # make the graph start at the decoder input, whether or not the weights require grad
    handle = first.register_forward_pre_hook(
        lambda mod, args, kwargs: ((args[0].detach().requires_grad_(True),) + args[1:], kwargs) if args else None,
        with_kwargs=True)
    try:
        with torch.enable_grad(), EagerComputing(eager):
            logits = scope.model(**inputs, use_cache=False).logits[0]
    finally:
        handle.remove()
    probs = [eager.probs[i] for i in layers]
    rows = tm.predicting_positions(len(answer_ids))
    out = []
    for j, (row, tok) in enumerate(zip(rows, answer_ids)):
        grads = torch.autograd.grad(logits[row, tok], probs, retain_graph=j < len(rows) - 1)
        m = identity_columns(tm.length, cols, device=logits.device)
        for p, g in zip(probs, grads):
            m = relevancy_step(m, p[0, heads].detach().float(), g[0, heads].float())
        out.append(m[row].detach().cpu().numpy())
    return np.stack(out)


def _result(scope, example, method, layers, heads, head_agg, layer_agg, tm, answer_ids, cols, keep_text,
            exclude_sinks) -> AttentionMaps:
    tok = scope.processor.tokenizer
    key_cols = _key_columns(tm, "vision+text" if keep_text else "vision").tolist()
    vision = set(tm.vision_positions())
    vis_idx = [i for i, p in enumerate(key_cols) if p in vision]
    text_idx = [i for i, p in enumerate(key_cols) if p not in vision]
    maps = cols[:, vis_idx]
    found = sink_tools.detect_sinks(maps) if exclude_sinks else []
    maps = sink_tools.exclude(maps, found)
    from ..inputs import load_image

    images = [load_image(i) for i in example.images] + [load_image(v[0]) for v in example.videos]
    return AttentionMaps(
        method=method, layers=list(layers), heads=list(heads), head_agg=head_agg, layer_agg=layer_agg,
        token_map=tm, token_ids=list(answer_ids), tokens=[tok.decode([t]) for t in answer_ids],
        answer=tok.decode(answer_ids, skip_special_tokens=True), maps=maps,
        text_maps=cols[:, text_idx] if keep_text else None, sinks=found, images=images)
