"""Token masking impact: which prompt words and which image regions the model's answer depends on.

Each unit (a token, a word, a k x k window of vision tokens, an image) is masked in turn, by
attention knockout, by replacing its input embeddings, or by occluding its pixels, and the
model's own answer is scored teacher-forced under every variant. Variants run in batches on a
shared slice of the clean KV cache (see masking_variants), so the cost per unit is a fraction of
one forward pass instead of a full generate.

    result = mask_impact(scope, Example("What colour is the circle?", images=["a.png"]), mode="vision")
    result.vision_map(token=0)   # [Nv] drop in log p(first answer token) per vision token
    result.save("out/")
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import VlmscopeError
from ..inputs import Example, load_image
from ..specs import parse_layers
from .masking_context import build_context
from .masking_result import MaskingResult
from .masking_units import Unit, build_units, parse_mode, parse_window
from .masking_variants import EDGES, METHODS, OCCLUSIONS, Perturbation, regenerate_chunk, score_chunk


@dataclass
class MaskingOptions:
    """Settings of one analysis. ``layers`` and ``edges`` restrict knockout to some decoder layers
    and to some receiving positions (``all``, ``vision``, ``question``, ``last``)."""

    mode: str = "vision"  # text | vision | both
    method: str = "knockout"  # knockout | zero | mean | noise | occlude
    window: int | str = 1  # k x k vision tokens, or "image"
    stride: int | None = None  # None: tiled windows; 1: sliding
    text_unit: str = "token"  # token | word
    image_index: int | None = None  # mask only this image's tokens
    layers: str | int | list[int] | None = "all"
    edges: str | tuple[str, ...] = "all"
    occlusion: str = "grey"  # grey | blur
    max_new_tokens: int = 16
    regenerate: bool = False
    batch_size: int = 32
    seed: int = 0


def perturbation(scope, opts: MaskingOptions) -> Perturbation:
    """Check the options against the model; errors name the bad value and what is accepted."""
    parse_mode(opts.mode)
    parse_window(opts.window)
    if opts.method not in METHODS:
        raise VlmscopeError(f"unknown masking method {opts.method!r}; choose from {', '.join(METHODS)}")
    if opts.method == "occlude" and opts.mode != "vision":
        raise VlmscopeError(f"method 'occlude' masks image pixels and needs mode 'vision', not {opts.mode!r}")
    if opts.occlusion not in OCCLUSIONS:
        raise VlmscopeError(f"unknown occlusion {opts.occlusion!r}; choose from {', '.join(OCCLUSIONS)}")
    edges = opts.edges.split(",") if isinstance(opts.edges, str) else opts.edges
    edges = tuple(str(e).strip() for e in edges) if isinstance(edges, (list, tuple)) else (repr(edges),)
    bad = [e for e in edges if e not in EDGES]
    if bad or not edges:
        raise VlmscopeError(f"unknown edge set {','.join(bad) or repr(opts.edges)}; choose from {', '.join(EDGES)}")
    n = scope.adapter.num_layers
    layers = parse_layers(opts.layers, n, "layer")
    if opts.method != "knockout" and (len(layers) != n or edges != ("all",)):
        raise VlmscopeError(f"layers and edges restrict attention knockout; method {opts.method!r} takes neither")
    if opts.method == "knockout" and "flash" in str(scope.adapter.attn_base):
        raise VlmscopeError("knockout edits the attention mask, which flash attention does not take; "
                            "load the model with attn_implementation='sdpa'")
    if opts.image_index is not None and not isinstance(opts.image_index, int):
        raise VlmscopeError(f"image_index must be a whole number, got {opts.image_index!r}")
    for name in ("max_new_tokens", "batch_size", "seed"):
        value = getattr(opts, name)
        if not isinstance(value, int) or value < (0 if name == "seed" else 1):
            raise VlmscopeError(f"{name} must be a whole number{'' if name == 'seed' else ' >= 1'}, got {value!r}")
    return Perturbation(opts.method, None if len(layers) == n else frozenset(layers), edges, opts.occlusion, opts.seed)


def mask_impact(scope, example: Example, options: MaskingOptions | None = None, *,
                answer_ids: list[int] | None = None, units: list[Unit] | None = None, **overrides) -> MaskingResult:
    """Mask every unit of `example` and score the answer under each.

    The answer is `answer_ids`, else ``example.answer``, else the model's own greedy answer of up to
    ``max_new_tokens`` tokens (one generate). `units` replaces the units that ``mode``, ``window``
    and ``text_unit`` would build (e.g. the tokens of an object against as many background tokens).
    """
    started = time.perf_counter()
    opts = replace(options or MaskingOptions(), **overrides)
    pert = perturbation(scope, opts)
    if example.videos:
        raise VlmscopeError("masking takes images and text; this example has a video")
    batch = scope.prepare(replace(example, answer=None), with_answers=False)
    if units is None:
        units = build_units(batch.token_maps[0], scope.processor.tokenizer, opts.mode, opts.window, opts.stride,
                            opts.text_unit)
    elif not units or any(not u.positions or max(u.positions) > batch.token_maps[0].query for u in units):
        raise VlmscopeError("custom units must be non-empty and lie inside the prompt")
    if opts.image_index is not None:
        batch.token_maps[0].visual(opts.image_index)  # names the valid range when out of it
        units = [u for u in units if u.kind == "text" or u.image == opts.image_index]
    if answer_ids is None:
        answer_ids = _answer(scope, example, opts.max_new_tokens)
    ctx = build_context(scope, batch, list(answer_ids))
    n, ids = len(answer_ids), ctx.answer.cpu()
    delta, kl = np.zeros((len(units), n), np.float32), np.zeros((len(units), n), np.float32)
    first_change: list[int | None] = [None] * len(units)
    for chunk in plan_chunks(units, range(len(units)), opts.batch_size):
        d, k, greedy = score_chunk(ctx, [units[i] for i in chunk], chunk, pert)
        delta[chunk], kl[chunk] = d.cpu().numpy(), k.cpu().numpy()
        for i, row in zip(chunk, (greedy.cpu() != ids[None]).tolist()):
            first_change[i] = row.index(True) if True in row else None
    regenerated = _regenerate(ctx, units, first_change, pert, opts) if opts.regenerate else None
    tok = scope.processor.tokenizer
    return MaskingResult(
        settings={**asdict(opts), "edges": list(pert.edges), "layers": sorted(pert.layers) if pert.layers else "all",
                  "model": scope.source},
        prompt=example.prompt, answer_ids=list(answer_ids), answer_tokens=[tok.decode([t]) for t in answer_ids],
        answer_text=tok.decode(list(answer_ids), skip_special_tokens=True),
        clean_logprobs=ctx.clean_logp.gather(-1, ctx.answer[:, None])[:, 0].cpu().numpy(),
        units=units, delta_logprob=delta, kl=kl, first_change=first_change, token_map=ctx.tm,
        regenerated=regenerated, images=[load_image(im) for im in example.images],
        seconds=time.perf_counter() - started)


def vision_importance(scope, example: Example, token: int | None = 0, *, image: int = 0, method: str = "knockout",
                      layers="all", edges="all", metric: str = "drop", answer_ids: list[int] | None = None,
                      max_new_tokens: int = 16, batch_size: int = 32) -> np.ndarray:
    """[Nv] importance of each vision token of `image` for answer token `token` (None: the whole
    answer): the drop in its log-probability (``metric="drop"``) or the KL divergence (``"kl"``)
    when that one token is masked. Raster order, as ``TokenMap.visuals[image].token_boxes()``.

    One call scores every answer token; for several tokens call `mask_impact` once and read
    ``result.vision_map(image, token)``.
    """
    opts = MaskingOptions(mode="vision", method=method, window=1, image_index=image, layers=layers, edges=edges,
                          max_new_tokens=max_new_tokens, batch_size=batch_size)
    return mask_impact(scope, example, opts, answer_ids=answer_ids).vision_map(image, token, metric)


def plan_chunks(units: list[Unit], indices, batch_size: int) -> list[list[int]]:
    """Batches of unit indices: one image per batch, in sequence order, so each batch's shared
    prefix reaches as far as its first masked position."""
    order = sorted(indices, key=lambda i: (units[i].image is not None, units[i].image or 0, units[i].first))
    chunks: list[list[int]] = []
    for i in order:
        if chunks and len(chunks[-1]) < batch_size and units[chunks[-1][0]].image == units[i].image:
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


def _answer(scope, example: Example, max_new_tokens: int) -> list[int]:
    if example.answer is not None:
        tm = scope.prepare(example).token_maps[0]
        return tm.input_ids[tm.answer[0]:tm.answer[1]]
    return scope.generate(replace(example, answer=None), max_new_tokens=max_new_tokens).generated_ids[0]


def _regenerate(ctx, units: list[Unit], first_change: list[int | None], pert: Perturbation,
                opts: MaskingOptions) -> list[str]:
    """Greedy answers under each unit's masking. Only units whose teacher-forced greedy choice
    differs somewhere are run: the others keep the scored answer token for token."""
    tok = ctx.scope.processor.tokenizer
    same = tok.decode(ctx.answer.tolist(), skip_special_tokens=True)
    out = [same] * len(units)
    changed = [i for i, c in enumerate(first_change) if c is not None]
    for chunk in plan_chunks(units, changed, opts.batch_size):
        answers = regenerate_chunk(ctx, [units[i] for i in chunk], chunk, pert, opts.max_new_tokens,
                                   ctx.scope.stop_ids())
        for i, a in zip(chunk, answers):
            out[i] = tok.decode(a, skip_special_tokens=True)
    return out


def masking_maps(scope, example: Example, first):
    """Knockout of each vision token in turn: the drop in each answer token's log-probability,
    as maps shaped like the attention maps of `first` (same answer ids): the "masking" method of
    the run report and the faithfulness evaluation."""
    result = mask_impact(scope, example, answer_ids=first.token_ids, mode="vision", method="knockout", window=1)
    n_images = len(first.token_map.visuals)
    maps = np.stack([np.concatenate([result.vision_map(k, j) for k in range(n_images)])
                     for j in range(len(first.token_ids))])
    return replace(first, method="masking", maps=np.nan_to_num(maps), layer_maps=None, sinks=[])
