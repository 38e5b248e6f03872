"""A check with a known answer: on shapes scenes, does a lens of the vision tokens inside an
object's box rank that object's colour word first among the six colour words? Chance is 1/6."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...data.shapes import COLOURS, generate_scene


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate k/n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def inside_tokens(boxes: np.ndarray, box) -> list[int]:
    """Vision tokens whose cell centre lies inside `box` (x0, y0, x1, y1)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return [int(t) for t in np.flatnonzero((cx >= box[0]) & (cx < box[2]) & (cy >= box[1]) & (cy < box[3]))]


def colour_ids(scope) -> dict[str, list[int]]:
    """Token ids of each colour word, bare and space-prefixed (single tokens only)."""
    tok = scope.processor.tokenizer
    out = {}
    for c in COLOURS:
        ids = [tok.encode(w, add_special_tokens=False) for w in (c, " " + c)]
        out[c] = [i[0] for i in ids if len(i) == 1]
    return out


@torch.inference_mode()
def colour_rates(scope, n_scenes: int = 40, seed: int = 1000, layers="all", kind: str = "logit", index=None) -> dict:
    """Per layer, how often the object's colour ranks first among the colour words, over every
    (object, inside token) pair of `n_scenes` fresh scenes; with n and a 95% Wilson interval.

    ``logit``: a colour's score is its best logit over its token forms; ``value``: the same on the
    value readout of the layer's attention. ``contextual``: its best cosine to any caption token
    spelling it (needs `index`)."""
    from ...inputs import Example
    from .common import layer_list, vision_states
    from .value import value_logits, value_states

    names = list(COLOURS)
    ids = colour_ids(scope)
    ctx = None
    if kind == "contextual":
        from .contextual import ContextIndex

        ctx = index if isinstance(index, ContextIndex) else ContextIndex(index)
        layers = ctx.layers if layers in (None, "all") else layer_list(scope, layers)
        ctx.check(scope, layers)
        texts = np.array([ctx.token(i)[0].strip().lower() for i in range(len(ctx))])
    else:
        layers = layer_list(scope, layers)
    hits = {i: 0 for i in layers}
    n = 0
    rng = np.random.default_rng(seed)
    for _ in range(n_scenes):
        scene = generate_scene(rng)
        example = Example("Describe the picture.", images=[scene.image])
        states, tm = (value_states if kind == "value" else vision_states)(scope, example, layers)
        boxes = tm.visuals[0].token_boxes()
        pairs = [(names.index(o.colour), t) for o in scene.objects for t in inside_tokens(boxes, o.box)]
        if not pairs:
            continue
        n += len(pairs)
        tokens = [t for _, t in pairs]
        for layer in layers:
            h = states[layer][tokens]
            if kind in ("logit", "value"):
                if kind == "value":
                    full = value_logits(scope, layer, h).cpu()
                else:
                    lm, head = scope.adapter.language_model, scope.adapter.lm_head
                    full = head(lm.norm(h.to(head.weight.device, head.weight.dtype))).float().cpu()
                score = torch.stack([full[:, ids[c]].max(-1).values for c in names], -1)
            else:
                assert ctx is not None
                sims, found = ctx.search(layer, h.numpy(), len(ctx))
                score = torch.full((len(tokens), len(names)), -2.0)
                for r in range(len(tokens)):
                    for s, i in zip(sims[r], found[r]):
                        if i >= 0 and texts[i] in names:
                            c = names.index(texts[i])
                            score[r, c] = max(score[r, c].item(), float(s))
            best = score.argmax(-1).tolist()
            hits[layer] += sum(int(b == want) for b, (want, _) in zip(best, pairs))
    return {
        "kind": kind,
        "scenes": n_scenes,
        "seed": seed,
        "n": n,
        "chance": 1 / len(names),
        "layers": {
            str(i): {"rate": hits[i] / n if n else float("nan"), "hits": hits[i], "ci95": list(wilson(hits[i], n))}
            for i in layers
        },
    }


def shapes_captions(n: int, seed: int = 0) -> list[str]:
    """Captions of fresh shapes scenes, written from their ground truth ("a red circle at the top
    left and a blue square at the bottom right."): a caption corpus whose colour words the model
    has seen in context."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        scene = generate_scene(rng)
        size = scene.image.size[0]
        parts = []
        for o in scene.objects:
            cx, cy = o.centre
            where = f"{'top' if cy < size / 2 else 'bottom'} {'left' if cx < size / 2 else 'right'}"
            parts.append(f"a {o.colour} {o.shape} at the {where}")
        out.append(" and ".join(parts) + ".")
    return out
