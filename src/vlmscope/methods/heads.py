"""Head selection for the attention maps, and the discovery of localisation heads.

A head spec is what `--heads` accepts everywhere:

- ``all``, or heads in the layer-spec language (``0,2``, ``1:3``): those heads in every layer;
- ``layer.head`` pairs (``1.3,0.2``): exactly those heads, each in its own layer (the map
  methods then read only the pairs' layers, and every pair counts once);
- a ``heads.json`` written by `vlmscope heads` (its ``top`` pairs).

Discovery (`discover`) scores every (layer, head) on questions whose object box is known: the
pointing game of the head's map of the answer's first token (its strongest vision token lies on
the target object) and the map's spatial entropy (0: all weight on one token, 1: uniform). The
target is the asked object, or on shapes scenes the object the answer relies on (`reliance`:
each object erased in turn), which differs where the model answers from another object. Heads
are ranked by pointing game, then by lower entropy; the saved top set is chosen by forward
selection: add the head whose inclusion most raises the pointing game of the mean map of the set,
stop when nothing raises it. Localisation heads in the sense of Kang et al. 2025 ("Your large
vision-language model only needs a few attention heads for visual grounding").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import VlmscopeError
from ..files import write_text

if TYPE_CHECKING:
    from ..scope import Scope
    from .answer import Answer
    from .faithfulness.items import BoxItem

TARGETS = ("asked", "relied")
_PAIRS = re.compile(r"^\s*-?\d+\.\d+\s*(,\s*-?\d+\.\d+\s*)*$")


def _pairs_from_json(path: Path) -> list[tuple[int, int]]:
    try:
        data = json.loads(path.read_text())
        pairs = [(int(p[0]), int(p[1])) for p in data["top"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        raise VlmscopeError(
            f"{str(path)!r} is not a heads file: expected JSON with a 'top' list of [layer, head] pairs "
            "(written by `vlmscope heads`)"
        ) from None
    if not pairs:
        raise VlmscopeError(f"heads file {str(path)!r} selects no head")
    return pairs


def is_pairs(spec) -> bool:
    return isinstance(spec, (list, tuple)) or (
        isinstance(spec, str) and (bool(_PAIRS.match(spec)) or spec.strip().endswith(".json"))
    )


def check_head_spec(spec) -> str | list[tuple[int, int]]:
    """Check a spec before any model is loaded: a heads file is read (pairs returned), pairs are
    parsed, other specs are returned as they are and resolved against the model later."""
    if isinstance(spec, (list, tuple)):
        return [(int(a), int(b)) for a, b in spec]
    text = str(spec).strip()
    if text.endswith(".json"):
        path = Path(text)
        if not path.is_file():
            raise VlmscopeError(f"no such heads file: {text!r}")
        return _pairs_from_json(path)
    if "." in text and not _PAIRS.match(text):
        raise VlmscopeError(f"bad head spec {text!r}: use layer.head pairs such as 1.3,0.2, a heads.json, or all")
    return text


def head_pairs(spec, num_layers: int, num_heads: int) -> dict[int, list[int]] | None:
    """{layer: heads} for a pairs spec or heads file (negative indices count from the end);
    None for a spec that applies to every layer."""
    if not is_pairs(spec):
        return None
    checked = check_head_spec(spec)
    raw = checked if isinstance(checked, list) else [tuple(int(x) for x in p.split(".")) for p in checked.split(",")]
    out: dict[int, list[int]] = {}
    for layer, head in raw:
        if not (-num_layers <= layer < num_layers and -num_heads <= head < num_heads):
            raise VlmscopeError(
                f"head {layer}.{head} out of range: the model has layers 0..{num_layers - 1} "
                f"and heads 0..{num_heads - 1}"
            )
        heads = out.setdefault(layer % num_layers, [])
        if head % num_heads not in heads:
            heads.append(head % num_heads)
    return {layer: sorted(out[layer]) for layer in sorted(out)}


def pairs_text(pairs) -> str:
    return ",".join(f"{layer}.{head}" for layer, head in pairs)


# ---- discovery ------------------------------------------------------------------------------


@dataclass
class HeadRanking:
    """Per-head scores on one dataset, the ranking and the selected top set."""

    heads: list[dict]  # layer, head, pointing {mean, lo, hi, n}, entropy, rank (best first)
    top: list[tuple[int, int]]
    top_pointing: dict  # pointing of the mean map of the top set on the discovery data
    all_heads_pointing: dict  # pointing of the mean map of every head
    selection: list[dict] = field(default_factory=list)  # the forward-selection path
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "top": [list(p) for p in self.top],
            "top_spec": pairs_text(self.top),
            "top_pointing": self.top_pointing,
            "all_heads_pointing": self.all_heads_pointing,
            "selection": self.selection,
            "heads": self.heads,
        }

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    def table(self, k: int = 10) -> str:
        lines = ["| rank | layer.head | pointing game [95% interval] | spatial entropy |", "|---|---|---|---|"]
        for h in self.heads[:k]:
            p = h["pointing"]
            lines.append(
                f"| {h['rank']} | {h['layer']}.{h['head']} | {p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}] "
                f"| {h['entropy']:.3f} |"
            )
        return "\n".join(lines)


def head_maps(scope: Scope, item: BoxItem) -> tuple[np.ndarray, np.ndarray, Answer]:
    """([L, H, Nv] attention of the first answer token's row, per layer and head; token boxes;
    the model's answer), from one generate that captures every layer's rows."""
    from ..capture.plan import CapturePlan
    from .answer import Answer

    plan = CapturePlan.of("llm.layers.attn", layers="all", tokens="generated", columns="vision")
    answer = Answer.resolve(scope, item.example, max_new_tokens=4, capture=plan)
    assert answer.trace is not None, "the generate captured the rows"
    n = scope.adapter.num_layers
    maps = np.stack([answer.trace[f"llm.layers.{i}.attn"][0][:, 0].float().numpy() for i in range(n)])
    return maps, answer.token_map.visuals[0].token_boxes(), answer


def relied_object(scope: Scope, item: BoxItem, answer: Answer) -> int:
    """Index of the scene object whose erasure moves the answer's first token most."""
    from .faithfulness.reliance import reliance
    from .masking.prefix import clean_run

    ctx = clean_run(scope, scope.prepare(answer.prompt, with_answers=False), answer.ids[:1])
    relied = reliance(scope, item, answer, ctx.clean_logp[0])
    assert relied is not None, "checked by discover: every item has its scene"
    return relied.relied


def _hits(maps: np.ndarray, boxes: np.ndarray, box) -> np.ndarray:
    from .faithfulness.scoring import pointing_hit

    return np.array([[pointing_hit(m, boxes, box) for m in layer] for layer in maps])


def discover(scope: Scope, items: list[BoxItem], max_heads: int = 8, target: str = "asked") -> HeadRanking:
    """Score, rank and select heads on `items` (questions with the asked object's box) against
    the asked object, or (`target="relied"`, shapes scenes only) the object the answer relies on."""
    from ..progress import progress
    from ..stats import bootstrap
    from .faithfulness.scoring import pointing_hit, spatial_entropy

    if not items:
        raise VlmscopeError("head discovery needs at least one question with a box")
    if target not in TARGETS:
        raise VlmscopeError(f"unknown --target {target!r}; choose from {', '.join(TARGETS)}")
    if target == "relied" and any(it.scene is None for it in items):
        raise VlmscopeError(
            "--target relied needs shapes scenes (each object is erased in turn); "
            "a CSV row knows one box: use --target asked"
        )
    all_maps, boxes, targets, hits, entropy, correct, on_asked = [], [], [], [], [], [], []
    for item in progress(items, desc="heads", unit="question"):
        maps, b, answer = head_maps(scope, item)
        box = item.box
        if target == "relied":
            assert item.scene is not None
            relied = relied_object(scope, item, answer)
            box = tuple(float(v) for v in item.scene.objects[relied].box)
            on_asked.append(box == item.box)
        all_maps.append(maps)
        boxes.append(b)
        targets.append(box)
        hits.append(_hits(maps, b, box))
        entropy.append([[spatial_entropy(m) for m in layer] for layer in maps])
        correct.append(item.correct(answer.text))
    H = np.array(hits, dtype=float)  # [N, L, H]
    ent = np.array(entropy).mean(0)
    n_layers, n_heads = H.shape[1:]
    pairs = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    order = sorted(pairs, key=lambda p: (-H[:, p[0], p[1]].mean(), ent[p]))
    heads = [
        {
            "layer": layer,
            "head": head,
            "pointing": bootstrap(H[:, layer, head]).to_dict(),
            "entropy": float(ent[layer, head]),
            "rank": rank + 1,
        }
        for rank, (layer, head) in enumerate(order)
    ]

    def set_hits(selected) -> np.ndarray:
        idx = tuple(np.array(selected).T)
        return np.array([pointing_hit(m[idx].mean(0), b, t) for m, b, t in zip(all_maps, boxes, targets)], float)

    selected: list[tuple[int, int]] = []
    best = -1.0
    path = []
    while len(selected) < min(max_heads, len(pairs)):
        scored = [(set_hits(selected + [p]).mean(), -order.index(p), p) for p in order if p not in selected]
        score, _, pick = max(scored)
        if score <= best:
            break
        selected.append(pick)
        best = score
        path.append({"heads": pairs_text(selected), "pointing": float(score)})
    every = set_hits(pairs)
    settings: dict = {"n": len(items), "max_heads": max_heads, "model": scope.source, "target": target}
    if on_asked:
        settings["relied_on_asked"] = float(np.mean(on_asked))
    known = [c for c in correct if c is not None]
    if known:
        settings["accuracy"] = float(np.mean(known))
    return HeadRanking(
        heads, selected, bootstrap(set_hits(selected)).to_dict(), bootstrap(every).to_dict(), path, settings
    )
