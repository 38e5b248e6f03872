"""Does a lens read an object's colour from the vision tokens inside its box? (bundled shapes model)

Every kind of lens on the same fresh scenes; a hit when the object's colour word ranks first
among the six colour words (chance 1/6), per layer, with n and a 95% Wilson interval. Then the
causal check behind the value lens: colour questions answered with the text -> vision attention
edges knocked out in one decoder layer at a time. Not a speed benchmark: a measurement with a
known answer, kept here with the other recorded results.

    python benchmarks/lens_colours.py --scenes 150 --seed 1000   # writes benchmarks/results/lens_colours.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import vlmscope
from vlmscope import Example
from vlmscope.capture.attention import intervening
from vlmscope.capture.knockout import Knockout
from vlmscope.data.shapes import make_dataset
from vlmscope.methods.lens import build_index
from vlmscope.methods.lens.colours import colour_rates, shapes_captions, wilson


def knockout_accuracy(scope, n: int, seed: int) -> dict:
    """Accuracy on `n` colour-of-shape questions (first answer token, teacher-forced query row),
    intact and with every text position's attention to the vision tokens cut in one layer."""
    records = make_dataset(4 * n, seed=seed, question_types=("colour_of_shape",))[:n]
    tok = scope.processor.tokenizer
    layers = list(range(scope.adapter.num_layers))
    hits = {"intact": 0, **{str(i): 0 for i in layers}}
    for r in records:
        ex = Example(r.question, images=[r.image])
        want = tok.encode(r.answer, add_special_tokens=False)[0]
        trace = scope.forward(ex, "logits", tokens="query")
        hits["intact"] += int(trace["logits"][0][-1].argmax().item() == want)
        tm = trace.token_maps[0]
        vision = torch.zeros(1, tm.length, dtype=torch.bool)
        vision[0, tm.vision_positions()] = True
        for i in layers:
            with intervening(Knockout(vision, ~vision[0], frozenset([i]))):
                logits = scope.forward(ex, "logits", tokens="query")["logits"][0][-1]
            hits[str(i)] += int(logits.argmax().item() == want)
    return {
        "n": len(records),
        "seed": seed,
        **{k: {"accuracy": v / len(records), "ci95": list(wilson(v, len(records)))} for k, v in hits.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1000, help="scene seed (the model was trained on seed 0)")
    ap.add_argument("--captions", type=int, default=500, help="captions in the contextual lens's index")
    ap.add_argument("--questions", type=int, default=100, help="colour questions of the knockout check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lens_colours.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scope = vlmscope.load()
    result: dict = {}
    for kind in ("logit", "value"):
        result[kind] = colour_rates(scope, n_scenes=args.scenes, seed=args.seed, kind=kind)
    with tempfile.TemporaryDirectory() as tmp:
        caps = Path(tmp) / "captions.txt"
        caps.write_text("\n".join(shapes_captions(args.captions, seed=0)) + "\n")
        index = build_index(scope, caps, "all", Path(tmp) / "index")
        result["contextual"] = colour_rates(scope, n_scenes=args.scenes, seed=args.seed, kind="contextual", index=index)
    result["captions"] = {"n": args.captions, "seed": 0}
    result["knockout"] = knockout_accuracy(scope, args.questions, args.seed + 1)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for kind in ("logit", "value", "contextual"):
        r = result[kind]
        cells = [f"{v['rate']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for v in r["layers"].values()]
        print(kind, f"n={r['n']}", *cells)
    ko = result["knockout"]
    print("knockout", f"n={ko['n']}", *(f"{k}: {v['accuracy']:.2f}" for k, v in ko.items() if isinstance(v, dict)))


if __name__ == "__main__":
    main()
