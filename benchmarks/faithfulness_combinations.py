"""Pointing game of map combinations on held-out shapes questions about one object.

Candidates are computed from one generate (every layer's and head's attention row of the first
answer token), one gradient of that token's logit with respect to every attention probability,
and one batch of window knockouts per question. Head sets are selected on --discover-seed and
scored on --seed; every number comes with its bootstrap 95% interval and n, and every candidate
is compared with the mean of all heads on the same questions.

    .venv/bin/python benchmarks/faithfulness_combinations.py --n 200 --discover-n 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import vlmscope
from vlmscope.capture.attention import EagerLayers, intervening
from vlmscope.methods.answer import Answer
from vlmscope.methods.faithfulness import pointing_hit, shapes_items
from vlmscope.methods.heads import discover
from vlmscope.methods.windows import WindowKnockout
from vlmscope.stats import bootstrap, paired_difference


def attention_and_gradient(scope, item):
    """[L, H, Nv] attention of the first answer token's row and d logit / d attention there."""
    answer = Answer.resolve(scope, item.example, max_new_tokens=2)
    tm = answer.token_map
    n = scope.adapter.num_layers
    eager = EagerLayers(range(n))
    first = scope.adapter.decoder_chain()[0]
    handle = first.register_forward_pre_hook(
        lambda m, a, k: ((a[0].detach().requires_grad_(True),) + a[1:], k) if a else None, with_kwargs=True
    )
    try:
        with torch.enable_grad(), intervening(eager):
            logits = scope.model(**answer.batch(scope).inputs, use_cache=False).logits[0]
    finally:
        handle.remove()
    probs = [eager.probs[i] for i in range(n)]
    grads = torch.autograd.grad(logits[tm.query, answer.ids[0]], probs)
    vis = tm.vision_positions()
    a = torch.stack([p[0, :, tm.query, vis] for p in probs]).detach().numpy()
    g = torch.stack([x[0, :, tm.query, vis] for x in grads]).numpy()
    return answer, a, g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--discover-n", type=int, default=200)
    ap.add_argument("--discover-seed", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/faithfulness_combinations.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    scope = vlmscope.load(device="cpu")
    ranking = discover(scope, shapes_items(args.discover_n, args.discover_seed))
    top = tuple(np.array(ranking.top).T)
    windows = {k: WindowKnockout(window=k) for k in (1, 2)}
    hits: dict[str, list[float]] = {}
    kinds = []
    for item in shapes_items(args.n, args.seed):
        answer, a, g = attention_and_gradient(scope, item)
        boxes = answer.token_map.visuals[0].token_boxes()
        ko = {k: w.attribute(scope, item.example, answer).maps[0] for k, w in windows.items()}
        early = a[:2].mean((0, 1))
        maps = {
            "mean of all heads": a.mean((0, 1)),
            "layers 0-1, all heads": early,
            f"discovered heads {ranking.to_dict()['top_spec']} (seed {args.discover_seed})": a[top].mean(0),
            "best single head": a[tuple(ranking.top[0])],
            "attention x gradient, positive, all heads": (a * g).clip(0).sum((0, 1)),
            "gradient norm only": np.abs(g).sum((0, 1)),
            "knockout 1x1, KL": ko[1],
            "knockout 2x2 sliding, KL (method 'windows')": ko[2],
            "layers 0-1 attention x knockout 2x2 KL": early * ko[2],
        }
        for name, m in maps.items():
            hits.setdefault(name, []).append(float(pointing_hit(m, boxes, item.box)))
        kinds.append(item.kind)
    ref = np.array(hits["mean of all heads"])
    rows = []
    for name, h in hits.items():
        v = np.array(h)
        rows.append(
            {
                "map": name,
                "pointing": bootstrap(v).to_dict(),
                "minus_mean_of_all_heads": paired_difference(v, ref).to_dict(),
                "by_type": {t: bootstrap(v[np.array(kinds) == t]).to_dict() for t in sorted(set(kinds))},
            }
        )
    out = {
        "settings": vars(args),
        "discovery": {k: v for k, v in ranking.to_dict().items() if k != "heads"},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"| map | pointing game, seed {args.seed} (n={args.n}) | minus mean of all heads (paired) |")
    print("|---|---|---|")
    for r in rows:
        p, d = r["pointing"], r["minus_mean_of_all_heads"]
        interval = f"{p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"
        print(f"| {r['map']} | {interval} | {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] |")
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
