"""Pointing game of the `windows` map under other perturbations and scores, on one question type.

Each question's 2 x 2 sliding windows of vision tokens are masked by attention knockout (what the
`windows` method does) or by replacing their embeddings with the image's mean vision embedding,
and scored by the KL change of the first answer token's distribution or by the drop of its
log-probability. One more variant keeps only the window (every other vision token knocked out)
and scores how little the distribution moves. Position questions are where every map falls short
(docs/faithfulness.md).

    .venv/bin/python benchmarks/faithfulness_perturbations.py [--seed 3000] [--n 200] [--types position]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import vlmscope
from vlmscope.methods.answer import Answer
from vlmscope.methods.faithfulness import pointing_hit, shapes_items
from vlmscope.methods.masking.analysis import mask_impact
from vlmscope.methods.masking.units import Unit, build_units
from vlmscope.stats import bootstrap

VARIANTS = {  # name -> (perturbation, metric)
    "knockout, KL (the windows method)": ("knockout", "kl"),
    "knockout, drop": ("knockout", "drop"),
    "mean embedding, KL": ("mean", "kl"),
    "mean embedding, drop": ("mean", "drop"),
    "only the window kept, -KL": ("keep", "kl"),
}


def _kept(scope, answer) -> list[Unit]:
    """Per sliding 2 x 2 window: a unit knocking out every other vision token, named by the
    window's cells (so `vision_map` credits the window)."""
    tm = answer.token_map
    everything = set(tm.visuals[0].positions)
    windows = build_units(tm, scope.processor.tokenizer, "vision", 2, 1)
    return [Unit("vision", w.label, tuple(sorted(everything - set(w.positions))), 0, w.cells) for w in windows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3000)
    ap.add_argument("--n", type=int, default=200, help="questions about one object; those of --types are kept")
    ap.add_argument("--types", default="position")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "faithfulness_perturbations.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scope = vlmscope.load()
    items = [it for it in shapes_items(args.n, args.seed) if it.kind in args.types.split(",")]
    hits: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for it in items:
        answer = Answer.resolve(scope, it.example, max_new_tokens=4)
        boxes = answer.token_map.visuals[0].token_boxes()
        runs = {
            p: mask_impact(
                scope, answer.prompt, answer_ids=answer.ids, mode="vision", window=2, stride=1, perturbation=p
            )
            for p in {p for p, _ in VARIANTS.values()} - {"keep"}
        }
        runs["keep"] = mask_impact(scope, answer.prompt, answer_ids=answer.ids, units=_kept(scope, answer))
        for name, (p, metric) in VARIANTS.items():
            m = np.nan_to_num(runs[p].vision_map(0, 0, metric=metric)) * (-1 if p == "keep" else 1)
            hits[name].append(float(pointing_hit(m, boxes, it.box)))
    rows = {k: bootstrap(np.array(v)).to_dict() for k, v in hits.items()}
    for k, r in rows.items():
        print(f"{k}: {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}")
    Path(args.out).write_text(json.dumps({"settings": vars(args), "pointing": rows}, indent=1))


if __name__ == "__main__":
    main()
