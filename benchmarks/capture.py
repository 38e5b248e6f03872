"""All-layer hidden states of a batch: vlmscope vs the floor vs the peers, same forward.

- floor: the model's plain forward over the batch (nothing kept);
- output_hidden_states: the same forward with `output_hidden_states=True`, every state on the CPU;
- nnsight (peer, when installed): `NNsight(model).trace(...)` saving every decoder layer's output;
- vlmscope: `scope.forward(batch, "llm.layers", tokens="all")` (every layer, every token, per
  example on the CPU).

Agreement: the last decoder layer from vlmscope equals nnsight's and transformers' (Qwen3-VL
adds deepstack features after the first layers, which vlmscope's `llm.layers.{i}` includes and
`hidden_states[i+1]` does not, so the earlier layers are not compared).

    python benchmarks/capture.py [--batch-size 8] [--threads 1] [--rounds 5] [--small]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def nnsight_states(model, inputs: dict, layers: int) -> list:
    """Every decoder layer's output through an nnsight trace (the trace body must live in a file)."""
    from nnsight import NNsight

    traced = getattr(model, "_vlmscope_nnsight", None) or NNsight(model)
    model._vlmscope_nnsight = traced
    with traced.trace(**inputs):
        saved = list().save()
        for i in range(layers):
            saved.append(traced.model.language_model.layers[i].output)
    return [s.cpu() for s in saved]


def run(args) -> dict:
    import torch
    from common import interleave

    import vlmscope
    from vlmscope import Example
    from vlmscope.data.shapes import export_vqa
    from vlmscope.data.sources import open_source

    scope = vlmscope.load(device=args.device, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        rows = list(open_source(export_vqa(args.batch_size, Path(tmp), seed=0)))
        examples = [Example(r.question, images=r.load_images()) for r in rows]
    batch = scope.prepare(examples, with_answers=False).to(scope.input_device)
    n = scope.adapter.num_layers
    out: dict = {}

    def ours():
        out["vlmscope"] = scope.forward(batch, "llm.layers", tokens="all")

    def hidden():
        out["hidden"] = [h.cpu() for h in scope.model(**batch.inputs, output_hidden_states=True).hidden_states]

    paths = {"floor": lambda: scope.model(**batch.inputs), "output_hidden_states": hidden, "vlmscope": ours}
    try:
        import nnsight  # noqa: F401

        def peer():
            out["nnsight"] = nnsight_states(scope.model, batch.inputs, n)

        paths["nnsight"] = peer
    except ImportError:
        pass
    with torch.inference_mode():
        for fn in paths.values():
            fn()
        res = interleave(paths, args.rounds, "floor", args.device)
    last = n - 1
    diffs = {}
    for b in range(batch.size):
        pad = batch.pad[b]
        ours_b = out["vlmscope"][f"llm.layers.{last}"][b]
        # the last layer's output is what the final norm receives: hidden_states[n] is after the norm
        if "nnsight" in out:
            diffs["nnsight"] = max(
                diffs.get("nnsight", 0.0), float((out["nnsight"][last][b, pad:] - ours_b).abs().max())
            )
    return {
        "model": "bundled shapes model (Qwen3-VL, 4 layers, width 128)",
        "batch_size": batch.size,
        "tokens": batch.length,
        "layers": n,
        "paths": res,
        "max_abs_diff_last_layer": diffs,
    }


def main(argv=None) -> int:
    from common import add_common, fmt_ratio, machine, setup, write

    ap = add_common(argparse.ArgumentParser(), "capture.json")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    if args.small:
        args.rounds = 3
    setup(args)
    info = machine(args)
    row = run(args)
    for k, v in row["paths"].items():
        if k != "floor":
            print(f"  {k} / floor {fmt_ratio(v['vs_floor'])}", flush=True)
    write(args.out, {"benchmark": "capture", "rounds": args.rounds, "machine": info, "rows": [row]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
