"""Attention probabilities for a few query rows while the model keeps its fast kernel.

`install(model)` swaps the decoder's attention implementation for a thin wrapper registered
through transformers' AttentionInterface. The wrapper calls the original kernel (SDPA, flash,
...) for the output; only while an intervention is active (`intervening`) does it do more: a
capture reads softmax(q k^T * scaling + mask) for the rows it asks for from the same
mRoPE-rotated q and k, knockout edits the mask, gradient maps compute a few layers eagerly.
The vision tower is left alone.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

# (every active intervention, then those with edit_mask, compute and observe): sorted once on
# entry, since the wrapper runs for every layer at every step
_ACTIVE: ContextVar = ContextVar("vlmscope_attention_interventions", default=((), (), (), ()))
PREFIX = "vlmscope_"


def install(model) -> str:
    """Wrap the text model's attention implementation; returns the wrapped base name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    text_config = getattr(model.config, "text_config", model.config)
    base = text_config._attn_implementation or "sdpa"
    if base.startswith(PREFIX):
        return base[len(PREFIX) :]
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        if base == "eager":
            from transformers.models.qwen2_vl.modeling_qwen2_vl import eager_attention_forward as base_fn
        else:
            base_fn = ALL_ATTENTION_FUNCTIONS[base]
        AttentionInterface.register(name, _wrap(base_fn))
        # The mask must be built as for the base kernel, or a custom name gets no mask at all.
        mask_fn = ALL_MASK_ATTENTION_FUNCTIONS[base] if base in ALL_MASK_ATTENTION_FUNCTIONS else None
        if mask_fn is None:
            from transformers.masking_utils import sdpa_mask

            mask_fn = sdpa_mask
        AttentionMaskInterface.register(name, mask_fn)
    model.set_attn_implementation({"text_config": name})
    return base


def _wrap(base_fn):
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        active, editors, computers, observers = _ACTIVE.get()
        if not active:
            return base_fn(module, query, key, value, attention_mask, *args, **kwargs)
        for a in editors:  # e.g. attention knockout: edits the mask of chosen layers
            attention_mask = a.edit_mask(module, query, key, attention_mask)
        out = None
        for a in computers:  # e.g. differentiable eager attention on a few layers
            out = a.compute(module, query, key, value, attention_mask, kwargs.get("scaling"))
            if out is not None:
                break
        if out is None:
            out = base_fn(module, query, key, value, attention_mask, *args, **kwargs)
        for a in observers:  # e.g. attention rows of a capture
            a.observe(module, query, key, attention_mask, kwargs.get("scaling"))
        return out

    return attention


def row_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    rows: torch.Tensor,
    scaling: float | None,
    *,
    last: bool = False,
) -> torch.Tensor:
    """[B, H, r, K] softmax probabilities for query rows `rows` (indices into query's q axis).

    Honours GQA (key heads repeated as transformers' repeat_kv does), a boolean or additive 4D
    mask, a 2D padding mask, or none (then causal by position: the q rows are the last q of K).
    ``last=True`` says `rows` is only the last query row (a decode step, the query position): it
    is sliced instead of gathered, and without a mask it sees every key, so no causal mask is built.
    """
    b, h, q, d = query.shape
    if last:
        return last_row_probabilities(query[:, :, q - 1 :].contiguous(), key, mask, scaling)
    k_len, kv_heads = key.shape[2], key.shape[1]
    r = len(rows)
    picked = query[:, :, rows]
    # group query heads by the key head they share (as repeat_kv does) instead of copying keys
    qr = picked.reshape(b, kv_heads, (h // kv_heads) * r, d)
    scores = torch.matmul(qr, key.transpose(-1, -2)).reshape(b, h, r, k_len).float()
    scores = scores * (scaling if scaling is not None else d**-0.5)
    if mask is not None and mask.dim() == 4:
        m = mask[:, :, rows, :k_len]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.float()
    else:
        abs_rows = rows.to(query.device) + (k_len - q)
        causal = torch.arange(k_len, device=query.device)[None, :] <= abs_rows[:, None]
        scores = scores.masked_fill(~causal[None, None], float("-inf"))
        if mask is not None and mask.dim() == 2:  # flash-style padding mask [B, K]
            scores = scores.masked_fill(~mask[:, None, None, :k_len].bool(), float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def last_row_probabilities(
    query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float | None
) -> torch.Tensor:
    """[B, H, 1, K] probabilities of the last query row (query [B, H, 1, d], that row itself;
    key [B, kv, K, d]). `mask` is the layer's mask for the whole query (its last row is used);
    without one the last row sees every key, so no causal mask is built. Leading dimensions
    before B are carried along."""
    *lead, b, h, _, d = query.shape
    kv_heads, k_len = key.shape[-3], key.shape[-2]
    qr = query.reshape(*lead, b, kv_heads, h // kv_heads, d)
    scores = torch.matmul(qr, key.transpose(-1, -2)).reshape(*lead, b, h, 1, k_len).float()
    scores = scores * (scaling if scaling is not None else d**-0.5)
    if mask is not None and mask.dim() == 4:
        m = mask[:, :, -1:, :k_len]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.float()
    elif mask is not None and mask.dim() == 2:  # flash-style padding mask [B, K]
        scores = scores.masked_fill(~mask[:, None, None, :k_len].bool(), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs if mask is None else probs.nan_to_num(0.0)


class DecodeRows:
    """Decode-step attention rows of one layer, computed together instead of one step at a time.

    A decode step asks for one query row, and its probabilities need only the keys up to that
    step, which the KV cache keeps unchanged while it grows. Holding each step's rotated q (the
    step's own small tensor, no copy), its mask row and the newest key lets one matmul and one
    softmax per layer replace one per layer per step: that per-step work, not the softmax itself,
    is what capturing attention costs on top of a generate. `extends(key)` says whether `key`
    is the same cache grown (else the queued steps must be computed first, against their key).
    """

    def __init__(self):
        self.queries: list[torch.Tensor] = []  # [B, H, 1, d] per step
        self.lengths: list[int] = []  # keys each step saw
        self.masks: list[torch.Tensor | None] = []  # per step: the layer's mask ([B, 1, q, K_s] or [B, K_s]), or None
        self.steps: list = []
        self.key: torch.Tensor | None = None
        self.scaling: float | None = None

    def __len__(self) -> int:
        return len(self.queries)

    def extends(self, key: torch.Tensor) -> bool:
        return not self.lengths or key.shape[-2] > self.lengths[-1]

    def add(self, query, key, mask, scaling, step) -> None:
        """Called on every layer of every decode step: kept to appends (no copies, no slicing
        when the step already has one query row; the latest key is detached once, in `take`)."""
        self.queries.append(query if query.shape[2] == 1 else query[:, :, -1:])
        self.lengths.append(key.shape[-2])
        self.masks.append(mask)  # as the kernel got it: layers sharing a mask share the object
        self.steps.append(step)
        self.key, self.scaling = key, scaling

    def take(self, max_steps: int = 256) -> list[tuple[torch.Tensor, list]]:
        """Every queued step's probabilities, as ([steps*B, H, K] ordered step-major, those steps)
        in runs of at most `max_steps` (to bound the scores' memory); the queue is emptied."""
        return take_together([self], max_steps)[0]

    def same_steps(self, other: DecodeRows) -> bool:
        """Whether `other` queued the same steps, masks and key shape (another layer of the same
        generate), so that both layers' rows can come from one matmul."""
        assert self.key is not None and other.key is not None
        return (
            self.steps == other.steps
            and self.lengths == other.lengths
            and self.key.shape == other.key.shape
            and self.scaling == other.scaling
            and all(a is b for a, b in zip(self.masks, other.masks))
        )


def take_together(
    queues: list[DecodeRows], max_steps: int = 256, max_scores: int = 1 << 24
) -> list[list[tuple[torch.Tensor, list]]]:
    """`q.take(max_steps)` of every queue, with layers that queued the same steps computed
    together (their keys stacked; at most `max_scores` scores, or stacked key elements, at once):
    on a small model one matmul and one softmax per layer cost more in dispatch than in arithmetic."""
    out: list[list[tuple[torch.Tensor, list]]] = [[] for _ in queues]
    i = 0
    while i < len(queues):
        first = queues[i]
        assert first.key is not None
        b, _, k_len, _ = first.key.shape
        per_layer = max(b * first.queries[0].shape[1] * min(len(first), max_steps) * k_len, first.key.numel())
        j = i + 1
        while j < len(queues) and (j - i + 1) * per_layer <= max_scores and first.same_steps(queues[j]):
            j += 1
        for k, taken in enumerate(_take_group(queues[i:j], max_steps)):
            out[i + k] = taken
        i = j
    for q in queues:
        q.queries, q.lengths, q.masks, q.steps, q.key = [], [], [], [], None
    return out


def _take_group(group: list[DecodeRows], max_steps: int) -> list[list[tuple[torch.Tensor, list]]]:
    """Per layer of `group` (same steps, see `same_steps`): [(probs [steps*B, H, K], steps)]."""
    first = group[0]
    assert first.key is not None
    keys = [q.key.detach() for q in group if q.key is not None]
    key = keys[0][None] if len(keys) == 1 else torch.stack(keys)  # [L, B, kv, K, d]
    n_layers, b, kv, k_len, d = key.shape
    scale = first.scaling if first.scaling is not None else d**-0.5
    cols = torch.arange(k_len, device=key.device)
    out: list[list[tuple[torch.Tensor, list]]] = [[] for _ in group]
    for i in range(0, len(first), max_steps):
        q = torch.stack([torch.cat(g.queries[i : i + max_steps], dim=2) for g in group]).detach()  # [L, B, H, S, d]
        h, s = q.shape[2], q.shape[3]
        # query heads grouped by the key head they share (as repeat_kv does) instead of copying keys
        scores = torch.matmul(q.reshape(n_layers, b, kv, (h // kv) * s, d), key.transpose(-1, -2))
        scores = scores.reshape(n_layers, b, h, s, k_len).float() * scale
        lengths = torch.tensor(first.lengths[i : i + max_steps], device=key.device)
        bias = torch.zeros(s, k_len, device=key.device).masked_fill_(cols[None, :] >= lengths[:, None], float("-inf"))
        masks = first.masks[i : i + max_steps]
        if any(m is not None for m in masks):  # the same mask objects in every layer of the group
            bias = bias + _stack_mask_rows(masks, b, k_len, key.device)
        probs = torch.softmax(scores + bias, dim=-1).nan_to_num(0.0)
        probs = probs.permute(0, 3, 1, 2, 4).reshape(n_layers, s * b, h, k_len)
        for layer in range(n_layers):
            out[layer].append((probs[layer], first.steps[i : i + max_steps]))
    return out


def _stack_mask_rows(masks: list, batch: int, k_len: int, device) -> torch.Tensor:
    """[B, 1, S, K] additive mask from each step's mask (4D boolean or additive, its last row used;
    a flash-style [B, K_s] padding mask; None: nothing masked); columns past a step's own keys
    are masked by the caller."""
    rows = []
    for m in masks:
        if m is None:
            rows.append(torch.zeros(batch, 1, 1, k_len, device=device))
            continue
        m = m[:, :, -1:] if m.dim() == 4 else m[:, None, None].bool()
        m = m.float().log() if m.dtype == torch.bool else m.float()  # True -> 0, False -> -inf
        rows.append(F.pad(m, (0, k_len - m.shape[-1])).expand(batch, 1, 1, k_len))
    return torch.cat(rows, dim=2)


@contextmanager
def intervening(*interventions):
    """While active, each intervention sees every decoder attention call through the methods it
    has (all optional):

    - ``edit_mask(module, query, key, mask) -> mask`` replaces the mask a layer uses
      (``module.layer_idx`` tells which layer; a None mask means plain causal attention without
      padding, and an editor that changes it must build the full 4D mask);
    - ``compute(module, query, key, value, mask, scaling) -> (output, weights) | None`` replaces
      the kernel for that call (None: keep the kernel);
    - ``observe(module, query, key, mask, scaling)`` reads the rotated q and k.

    Nesting adds to the active set; leaving restores it, even when the forward raises."""
    active = _ACTIVE.get()[0] + tuple(interventions)
    token = _ACTIVE.set(
        (active, *(tuple(a for a in active if hasattr(a, m)) for m in ("edit_mask", "compute", "observe")))
    )
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class EagerLayers:
    """Differentiable attention probabilities for a few layers (gradient-weighted maps need
    dOutput/dA); every other layer keeps the fast kernel. ``probs[layer]`` is [B, H, q, K]."""

    def __init__(self, layers):
        self.layers = set(layers)
        self.probs: dict[int, torch.Tensor] = {}

    def compute(self, module, query, key, value, mask, scaling):
        if getattr(module, "layer_idx", -1) not in self.layers:
            return None
        rows = torch.arange(query.shape[2], device=query.device)
        probs = row_probabilities(query, key, mask, rows, scaling).to(value.dtype)
        if probs.requires_grad:
            probs.retain_grad()
        self.probs[module.layer_idx] = probs
        n_rep = query.shape[1] // value.shape[1]
        v = value.repeat_interleave(n_rep, dim=1) if n_rep > 1 else value
        return torch.matmul(probs, v).transpose(1, 2).contiguous(), None
