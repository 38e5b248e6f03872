"""Per-vision-token masking: vlmscope vs the seed-style loop, same model, same process, same run.

Both knock out every vision token of one image in turn (no later position attends to it, every
decoder layer) and measure the effect on the model's 16-token greedy answer.

- seed-style loop: one full `generate` per masked token, batch 1 (vision tower, prefill and 16
  decode steps every time), with the knockout applied through the same mask editor;
- vlmscope: `mask_impact` (one clean generate, then batched teacher-forced variants on a shared
  prefix KV cache), and the same with `batch_size=1` to separate batching from the rest.

Agreement: for every masked token, the change in log-probability of each answer token and the KL
divergence agree where both define them: at answer tokens up to the first one where the loop's
greedy output leaves the clean answer (after that the loop conditions on a different prefix).

    python benchmarks/masking.py [--configs tiny,small] [--tokens 144] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# decoder sizes; the vision tower is 2 blocks in both
CONFIGS = {
    "tiny": dict(text_layers=3, hidden=64, heads=4, kv_heads=2, vision_hidden=32),
    "small": dict(text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64),
}


def _image(side: int):
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))


def seed_loop(scope, example, units, new_tokens: int):
    """The clean greedy generate, then one per masked unit, batch 1: (answer ids, [n, vocab] log-probs)."""
    import torch

    from vlmscope.capture.attention import intervening
    from vlmscope.capture.knockout import Knockout

    batch = scope.prepare(example).to(scope.input_device)
    length = batch.length + new_tokens
    out = []
    for u in [None, *units]:
        members = torch.zeros(1, length, dtype=torch.bool)
        if u is not None:
            members[0, list(u.positions)] = True
        editor = Knockout(members, torch.ones(length, dtype=torch.bool), None, eager=False)
        with intervening(editor), torch.inference_mode():
            gen = scope.model.generate(**batch.inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                       do_sample=False, output_logits=True, return_dict_in_generate=True,
                                       pad_token_id=scope.processor.tokenizer.pad_token_id)
        logp = torch.log_softmax(torch.stack(gen.logits)[:, 0].float(), -1)
        out.append((gen.sequences[0, batch.length:].tolist(), logp))
    return out[0], out[1:]


def vlmscope_run(scope, example, new_tokens: int, batch_size: int):
    from vlmscope.methods.masking import mask_impact

    ids = scope.generate(example, max_new_tokens=new_tokens, min_new_tokens=new_tokens).generated_ids[0]
    return mask_impact(scope, example, mode="vision", perturbation="knockout", answer_ids=ids, batch_size=batch_size)


def agreement(result, clean, loop) -> dict:
    """Max |difference| of delta log-prob and KL where both are defined, and first-change agreement."""
    clean_ids, clean_logp = clean
    answer = result.answer_ids
    d_err = kl_err = 0.0
    entries = same_change = 0
    for u, (ids, logp) in enumerate(loop):
        diverge = next((j for j, (a, b) in enumerate(zip(ids, answer)) if a != b), None)
        same_change += diverge == result.first_change[u]
        for j in range(len(answer) if diverge is None else diverge + 1):
            delta = float(logp[j, answer[j]] - clean_logp[j, answer[j]])
            kl = float((clean_logp[j].exp() * (clean_logp[j] - logp[j])).sum())
            d_err = max(d_err, abs(delta - float(result.delta_logprob[u, j])))
            kl_err = max(kl_err, abs(kl - float(result.kl[u, j])))
            entries += 1
    return {"same_clean_answer": clean_ids == answer, "delta_logprob_max_abs_diff": d_err,
            "kl_max_abs_diff": kl_err, "entries_compared": entries,
            "first_change_agrees": f"{same_change}/{len(loop)}"}


def bench(name: str, model_dir: str, tokens: int, new_tokens: int, batch_size: int) -> dict:
    import torch

    import vlmscope
    from vlmscope import Example

    side = int(round(tokens ** 0.5)) * 32  # Qwen3-VL: patch 16 x merge 2 pixels per vision token
    scope = vlmscope.load(model_dir, device="cpu", dtype="float32", min_pixels=side * side, max_pixels=side * side)
    example = Example("Describe the picture in detail.", images=[_image(side)])
    vlmscope_run(scope, example, 2, batch_size)  # warm-up

    t = time.perf_counter()
    result = vlmscope_run(scope, example, new_tokens, batch_size)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    vlmscope_run(scope, example, new_tokens, 1)
    ours_b1 = time.perf_counter() - t
    t = time.perf_counter()
    clean, loop = seed_loop(scope, example, result.units, new_tokens)
    theirs = time.perf_counter() - t

    agree = agreement(result, clean, loop)
    vis = result.token_map.visuals[0]
    return {"config": name, "decoder": CONFIGS[name], "vision_tokens": vis.num_tokens,
            "grid": list(vis.merged_thw), "prompt_tokens": result.token_map.query + 1, "new_tokens": new_tokens,
            "units": len(result.units), "batch_size": batch_size, "seed_loop_s": theirs, "vlmscope_s": ours,
            "vlmscope_batch1_s": ours_b1, "speedup": theirs / ours, "speedup_batch1": theirs / ours_b1,
            "torch_threads": torch.get_num_threads(), **agree}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--tokens", type=int, default=144, help="vision tokens of the image (a square grid)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32, help="variants per forward (the library default)")
    ap.add_argument("--out", default=str(HERE / "results" / "masking.json"))
    args = ap.parse_args(argv)
    from vlmscope.models.tiny import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            model_dir = str(build_tiny_model("qwen3_vl", Path(tmp) / name, **CONFIGS[name]))
            rows.append(bench(name, model_dir, args.tokens, args.new_tokens, args.batch_size))
            r = rows[-1]
            print(f"  {name}: seed loop {r['seed_loop_s']:.2f} s, vlmscope {r['vlmscope_s']:.2f} s "
                  f"({r['speedup']:.1f}x)", flush=True)
    print("\n| decoder | vision tokens | answer tokens | seed-style loop s | vlmscope s | speedup "
          "| vlmscope batch 1 s | max abs diff: delta log-prob, KL | first change agrees |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["decoder"]
        print(f"| {r['config']} ({d['text_layers']} layers, width {d['hidden']}) | {r['vision_tokens']} | "
              f"{r['new_tokens']} | {r['seed_loop_s']:.2f} | {r['vlmscope_s']:.2f} | {r['speedup']:.1f}x | "
              f"{r['vlmscope_batch1_s']:.2f} | {r['delta_logprob_max_abs_diff']:.1e}, {r['kl_max_abs_diff']:.1e} | "
              f"{r['first_change_agrees']} |")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "device": "cpu", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
