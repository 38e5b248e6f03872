"""Token masking impact: which prompt words and which image regions the model's answer depends on.

Each unit (a token, a word, a k x k window of vision tokens, an image) is masked in turn, by
attention knockout, by replacing its input embeddings, or by occluding its pixels (the
perturbation), and the model's own answer is scored teacher-forced under every variant. Variants
run in batches on a shared slice of the clean KV cache (see `scoring`), so the cost per unit is
a fraction of one forward pass instead of a full generate.

    result = mask_impact(scope, Example("What colour is the circle?", images=["a.png"]), mode="vision")
    result.vision_map(token=0)   # [Nv] drop in log p(first answer token) per vision token
    result.save("out/")
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING

import numpy as np

from ...errors import VlmscopeError
from ...inputs import Example, load_image
from ...limits import ANSWER_TOKENS
from ...progress import progress
from .options import MaskingOptions, check_options
from .perturbations import Perturbation
from .prefix import CleanRun, clean_run
from .result import MaskingResult
from .scoring import plan_chunks, regenerate_chunk, score_chunk, unchanged_units
from .units import Unit, build_units

if TYPE_CHECKING:
    from ...scope import Scope


def mask_impact(
    scope: Scope,
    example: Example,
    options: MaskingOptions | None = None,
    *,
    answer_ids: list[int] | None = None,
    units: list[Unit] | None = None,
    label: str = "masking",
    **overrides,
) -> MaskingResult:
    """Mask every unit of `example` and score the answer under each.

    The answer is `answer_ids`, else ``example.answer``, else the model's own greedy answer of up to
    ``max_new_tokens`` tokens (one generate). `units` replaces the units that ``mode``, ``window``
    and ``text_unit`` would build (e.g. the tokens of an object against as many background tokens).
    `label` names the job on the progress bar (a map method built on masking gives its own name).
    """
    started = time.perf_counter()
    unknown = sorted(set(overrides) - set(MaskingOptions.__dataclass_fields__))
    if unknown:
        raise VlmscopeError(
            f"unknown masking option {unknown[0]!r}; accepted: {', '.join(MaskingOptions.__dataclass_fields__)}"
        )
    opts = replace(options or MaskingOptions(), **overrides)
    pert = check_options(scope, opts)
    if example.videos:
        raise VlmscopeError("masking takes images and text; this example has a video")
    batch = scope.prepare(replace(example, answer=None), with_answers=False)
    if units is None:
        units = build_units(
            batch.token_maps[0], scope.processor.tokenizer, opts.mode, opts.window, opts.stride, opts.text_unit
        )
    elif not units or any(not u.positions or max(u.positions) > batch.token_maps[0].query for u in units):
        raise VlmscopeError("custom units must be non-empty and lie inside the prompt")
    if opts.image_index is not None:
        batch.token_maps[0].visual(opts.image_index)  # names the valid range when out of it
        units = [u for u in units if u.kind == "text" or u.image == opts.image_index]
    if answer_ids is None:
        answer_ids = _answer(scope, example, opts.max_new_tokens)
    ctx = clean_run(scope, batch, list(answer_ids))
    n, ids = len(answer_ids), ctx.answer.cpu()
    delta, kl = np.zeros((len(units), n), np.float32), np.zeros((len(units), n), np.float32)
    first_change: list[int | None] = [None] * len(units)
    with progress(total=len(units), desc=label, unit="unit") as bar:
        skip = unchanged_units(ctx, units, pert)  # zero impact, nothing to run: the clean choices
        clean = (ctx.clean_logp.argmax(-1).cpu() != ids).tolist()
        for i in skip:
            first_change[i] = clean.index(True) if True in clean else None
        bar.update(len(skip))
        for chunk in plan_chunks(units, [i for i in range(len(units)) if i not in skip], opts.batch_size):
            d, k, greedy = score_chunk(ctx, [units[i] for i in chunk], chunk, pert)
            delta[chunk], kl[chunk] = d.cpu().numpy(), k.cpu().numpy()
            for i, row in zip(chunk, (greedy.cpu() != ids[None]).tolist()):
                first_change[i] = row.index(True) if True in row else None
            bar.update(len(chunk))
    regenerated = _regenerate(ctx, units, first_change, pert, opts) if opts.regenerate else None
    tok = scope.processor.tokenizer
    return MaskingResult(
        settings={
            **asdict(opts),
            "edges": list(pert.edges),
            "layers": sorted(pert.layers) if pert.layers else "all",
            "model": scope.source,
        },
        prompt=example.prompt,
        answer_ids=list(answer_ids),
        answer_tokens=[tok.decode([t]) for t in answer_ids],
        answer_text=tok.decode(list(answer_ids), skip_special_tokens=True),
        clean_logprobs=ctx.clean_logp.gather(-1, ctx.answer[:, None])[:, 0].cpu().numpy(),
        units=units,
        delta_logprob=delta,
        kl=kl,
        first_change=first_change,
        token_map=ctx.tm,
        regenerated=regenerated,
        images=[load_image(im) for im in example.images],
        seconds=time.perf_counter() - started,
    )


def vision_importance(
    scope: Scope,
    example: Example,
    token: int | None = 0,
    *,
    image: int = 0,
    perturbation: str = "knockout",
    layers="all",
    edges="all",
    metric: str = "drop",
    answer_ids: list[int] | None = None,
    max_new_tokens: int = ANSWER_TOKENS,
    batch_size: int = 32,
) -> np.ndarray:
    """[Nv] importance of each vision token of `image` for answer token `token` (None: the whole
    answer): the drop in its log-probability (``metric="drop"``) or the KL divergence (``"kl"``)
    when that one token is masked. Raster order, as ``TokenMap.visuals[image].token_boxes()``.

    One call scores every answer token; for several tokens call `mask_impact` once and read
    ``result.vision_map(image, token)``.
    """
    opts = MaskingOptions(
        mode="vision",
        perturbation=perturbation,
        window=1,
        image_index=image,
        layers=layers,
        edges=edges,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return mask_impact(scope, example, opts, answer_ids=answer_ids).vision_map(image, token, metric)


def _answer(scope: Scope, example: Example, max_new_tokens: int) -> list[int]:
    if example.answer is not None:
        tm = scope.prepare(example).token_maps[0]
        assert tm.answer is not None, "a teacher-forced example has an answer span"
        return tm.input_ids[tm.answer[0] : tm.answer[1]]
    generated = scope.generate(replace(example, answer=None), max_new_tokens=max_new_tokens).generated_ids
    assert generated is not None, "generate records the generated ids"
    return generated[0]


def _regenerate(
    ctx: CleanRun, units: list[Unit], first_change: list[int | None], pert: Perturbation, opts: MaskingOptions
) -> list[str]:
    """Greedy answers under each unit's masking. Only units whose teacher-forced greedy choice
    differs somewhere are run: the others keep the scored answer token for token."""
    tok = ctx.scope.processor.tokenizer
    same = tok.decode(ctx.answer.tolist(), skip_special_tokens=True)
    out = [same] * len(units)
    changed = [i for i, c in enumerate(first_change) if c is not None]
    with progress(total=len(changed), desc="regenerate", unit="unit") as bar:
        for chunk in plan_chunks(units, changed, opts.batch_size):
            answers = regenerate_chunk(
                ctx, [units[i] for i in chunk], chunk, pert, opts.max_new_tokens, ctx.scope.stop_ids()
            )
            for i, a in zip(chunk, answers):
                out[i] = tok.decode(a, skip_special_tokens=True)
            bar.update(len(chunk))
    return out
