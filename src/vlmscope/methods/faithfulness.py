"""Do the maps point at what the model used? Scored on shapes scenes whose boxes are known.

For each question about one object, the map of the answer's first token is scored by:
- pointing game: the map's strongest vision token lies on the asked object (its centre falls
  inside the object's box grown by half a token: a token-resolution map cannot point finer);
- deletion AUC: knock out vision tokens in the map's order (most important first) and follow the
  probability of the model's answer; a faithful map makes it fall fast (lower is better);
- insertion AUC: start with every vision token knocked out and restore them in the map's order
  (higher is better).
Knockout removes a token from attention in every layer (the model's causal mask otherwise
unchanged), so Qwen3-VL's deepstack features at that position cannot leak either. Baselines:
a random map (seeded) and a centre-bias map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..capture.attention import intervening
from ..capture.knockout import Knockout
from ..inputs import Example
from .answer import Answer
from .raw import RawAttention
from .registry import MAP_METHODS, check_method_names

if TYPE_CHECKING:
    from ..scope import Scope

BASELINES = ("random", "centre")


@dataclass
class FaithfulnessResult:
    rows: list[dict]  # one per (method, layer range): pointing, deletion, insertion, n
    samples: int
    accuracy: float  # the model's accuracy on the evaluated questions
    per_example: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "accuracy": self.accuracy, "rows": self.rows}

    def table(self) -> str:
        lines = [
            "| method | layers | pointing game | deletion AUC (lower better) | insertion AUC (higher better) |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r['method']} | {r['layers']} | {r['pointing']:.3f} | {r['deletion']:.3f} | {r['insertion']:.3f} |"
            )
        return "\n".join(lines)

    def save(self, path) -> None:
        import json
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))


def pointing_hit(scores: np.ndarray, boxes: np.ndarray, target, tolerance: float = 0.5) -> bool:
    """Does the centre of the top-scoring token fall inside `target` (grown by `tolerance` tokens)?"""
    j = int(np.argmax(scores))
    x0, y0, x1, y1 = boxes[j]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    gx, gy = (x1 - x0) * tolerance, (y1 - y0) * tolerance
    tx0, ty0, tx1, ty1 = target
    return tx0 - gx <= cx <= tx1 + gx and ty0 - gy <= cy <= ty1 + gy


def centre_map(visual) -> np.ndarray:
    _, h, w = visual.merged_thw
    ys, xs = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    return np.exp(-(xs**2 + ys**2) / (2 * (max(h, w) / 4) ** 2)).reshape(-1)


def curve_probs(
    scope: Scope, answer: Answer, order: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(first answer token) as the top-k tokens of `order` are knocked out (deletion) or are the
    only ones kept (insertion), k = 0..Nv in `steps` steps; all variants in one batch."""
    tm = answer.token_map
    vis = np.asarray(tm.vision_positions())
    ks = np.unique(np.linspace(0, len(vis), steps + 1).round().astype(int))
    members = torch.zeros(2 * len(ks), tm.length, dtype=torch.bool)
    for i, k in enumerate(ks):
        members[i, vis[order[:k]]] = True  # deletion: the k most important go
        members[len(ks) + i, vis[order[k:]]] = True  # insertion: only the k most important stay
    batch = answer.batch(scope, copies=len(members))  # every variant sees the same image; only the mask differs
    targets = torch.ones(tm.length, dtype=torch.bool)
    editor = Knockout(members.to(scope.input_device), targets.to(scope.input_device), None, eager=False)
    with torch.inference_mode(), intervening(editor):
        logits = scope.model(**batch.inputs, use_cache=False).logits[:, tm.query].float()
    p = torch.softmax(logits, -1)[:, answer.ids[0]].cpu().numpy()
    return ks / len(vis), p[: len(ks)], p[len(ks) :]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    if hasattr(np, "trapezoid"):
        return float(np.trapezoid(y, x))
    return float(np.trapz(y, x))  # type: ignore[attr-defined,unused-ignore]  # numpy 1.x only


def evaluate(
    scope: Scope, n: int = 40, seed: int = 1000, methods=tuple(MAP_METHODS), layer_ranges=None, steps: int = 8
) -> FaithfulnessResult:
    """Score map methods (and random / centre baselines) on `n` fresh shapes questions about one object."""
    from ..data.shapes import make_dataset
    from ..specs import parse_layers

    methods = check_method_names(methods)
    n_layers = scope.adapter.num_layers
    ranges = layer_ranges or {"all": "all", "first half": f"0:{n_layers // 2}", "second half": f"{n_layers // 2}:"}
    ranges = {name: parse_layers(spec, n_layers) for name, spec in ranges.items()}
    records = [r for r in make_dataset(4 * n, seed=seed) if r.box is not None][:n]
    rng = np.random.default_rng(seed)
    scores: dict[tuple[str, str], list[tuple[bool, float, float]]] = {}
    correct = 0
    raw = RawAttention()
    for rec in records:
        ex = Example(rec.question, images=[rec.image])
        answer = Answer.resolve(scope, ex, max_new_tokens=4, capture=raw.capture_plan(scope))
        correct += answer.text.strip().lower() == rec.answer.lower()
        visual = answer.token_map.visuals[0]
        boxes = visual.token_boxes()
        maps: dict[tuple[str, str], np.ndarray] = {}
        for m in methods:
            if m == "raw":  # one set of rows, scored per layer range
                result = raw.attribute(scope, ex, answer)
                assert result.layer_maps is not None, "the raw method keeps its per-layer maps"
                for name, layers in ranges.items():
                    idx = [result.layers.index(i) for i in layers]
                    maps[("raw", name)] = result.layer_maps[idx, 0].mean(0)
            else:
                maps[(m, "all")] = MAP_METHODS[m]().attribute(scope, ex, answer).maps[0]
        maps[("random", "-")] = rng.random(visual.num_tokens)
        maps[("centre", "-")] = centre_map(visual)
        for key, values in maps.items():
            order = np.argsort(-values, kind="stable")
            x, deletion, insertion = curve_probs(scope, answer, order, steps)
            scores.setdefault(key, []).append(
                (pointing_hit(values, boxes, rec.box), auc(x, deletion), auc(x, insertion))
            )
    rows = [
        {
            "method": m,
            "layers": r,
            "n": len(v),
            "pointing": float(np.mean([s[0] for s in v])),
            "deletion": float(np.mean([s[1] for s in v])),
            "insertion": float(np.mean([s[2] for s in v])),
        }
        for (m, r), v in scores.items()
    ]
    return FaithfulnessResult(rows, len(records), correct / max(len(records), 1))
