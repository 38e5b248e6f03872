"""Per-vision-token masking: vlmscope vs Captum's FeatureAblation vs the floor, same scores.

Every vision token of one image is zero-ablated in turn (its input embedding replaced by zeros)
and the model's own answer is scored teacher-forced: the total log-probability of the answer.

- floor: one teacher-forced forward of prompt + answer (what a single clean score costs);
- captum (peer, when installed): `FeatureAblation` over the vision-token embeddings, baseline 0,
  one feature per token, `perturbations_per_eval=32`; its forward puts the embeddings into the
  prompt and runs the decoder over the whole sequence; the vision tower runs once;
- vlmscope: `mask_impact(..., perturbation="zero", batch_size=32)` (vision tower once, variants
  batched on the shared clean prefix cache).

Agreement: Captum's attribution of token i (clean - ablated) equals minus vlmscope's total drop
`delta_logprob[i].sum()`; the largest difference is reported. The model is a random Qwen2.5-VL
(no deepstack, so zeroing the embedding is the whole perturbation for both).

    python benchmarks/masking.py [--tokens 144] [--new-tokens 16] [--threads 1] [--rounds 5] [--small]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import FULL_7B, FULL_7B_EXTRA  # noqa: E402

CONFIGS = {
    "tiny": (dict(text_layers=3, hidden=64, heads=4, kv_heads=2, vision_hidden=32), None),
    "small": (dict(text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64), None),
    "7b": (FULL_7B, FULL_7B_EXTRA),  # for a GPU
}


def _image(side: int):
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))


def forced_inputs(scope, example, answer_ids: list[int]) -> dict:
    """Model inputs of the prompt followed by exactly `answer_ids` (no re-tokenisation)."""
    import torch

    inp = dict(scope.prepare(example).to(scope.input_device).inputs)
    answer = torch.tensor([answer_ids], dtype=inp["input_ids"].dtype, device=inp["input_ids"].device)
    inp["input_ids"] = torch.cat([inp["input_ids"], answer], 1)
    inp["attention_mask"] = torch.ones_like(inp["input_ids"])
    if "mm_token_type_ids" in inp:
        inp["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"], torch.zeros_like(answer)], 1)
    return inp


def captum_ablation(scope, example, answer_ids: list[int], per_eval: int):
    """Captum FeatureAblation over the vision-token embeddings: [Nv] clean - ablated answer log-prob."""
    import torch
    from captum.attr import FeatureAblation

    ad = scope.adapter
    inp = forced_inputs(scope, example, answer_ids)
    ids = inp["input_ids"]
    visual = ids[0] == ad.token_ids["image"]
    features, _ = ad.image_features(inp["pixel_values"], inp["image_grid_thw"])
    vis = torch.cat(features)[None]  # [1, Nv, D]
    embeds = ad.language_model.embed_tokens(ids)
    positions = ad.rope_positions(ids, inp.get("mm_token_type_ids"), inp["image_grid_thw"])
    n = len(answer_ids)
    rows = list(range(ids.shape[1] - n - 1, ids.shape[1] - 1))  # the positions that predict the answer
    answer = torch.tensor(answer_ids, device=ids.device)[None, :, None]

    def forward(v):  # [P, Nv, D] -> [P] total log-probability of the answer
        p = v.shape[0]
        e = embeds.expand(p, -1, -1).clone()
        e[:, visual] = v.to(e.dtype)
        out = ad.language_model(inputs_embeds=e, position_ids=positions.expand(3, p, -1), use_cache=False)
        logp = torch.log_softmax(ad.lm_head(out.last_hidden_state[:, rows]).float(), -1)
        return logp.gather(-1, answer.expand(p, -1, -1))[..., 0].sum(-1)

    mask = torch.arange(vis.shape[1], device=vis.device)[None, :, None].expand_as(vis)
    attr = FeatureAblation(forward).attribute(vis, baselines=0.0, feature_mask=mask, perturbations_per_eval=per_eval)
    return attr[0, :, 0]


def run(args, model_dir: str) -> dict:
    import torch
    from common import interleave

    import vlmscope
    from vlmscope import Example
    from vlmscope.methods.masking import mask_impact

    side = int(round(args.tokens**0.5)) * 28  # patch 14 x merge 2 pixels per vision token
    scope = vlmscope.load(
        model_dir, device=args.device, dtype=args.dtype, min_pixels=side * side, max_pixels=side * side
    )
    prompt = "Describe the picture in detail."
    example = Example(prompt, images=[_image(side)])
    ids = scope.generate(example, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens).generated_ids[0]
    out: dict = {}

    def ours():
        out["vlmscope"] = mask_impact(
            scope, example, mode="vision", perturbation="zero", answer_ids=ids, batch_size=args.batch_size
        )

    inputs = forced_inputs(scope, example, ids)
    paths = {"floor": lambda: scope.model(**inputs), "vlmscope": ours}
    try:
        import captum  # noqa: F401

        def theirs():
            out["captum"] = captum_ablation(scope, example, ids, args.batch_size)

        paths["captum"] = theirs
    except ImportError:
        pass
    with torch.inference_mode():
        for fn in paths.values():
            fn()  # warm-up
        res = interleave(paths, args.rounds, "floor", args.device)
    result = out["vlmscope"]
    row = {
        "vision_tokens": result.token_map.visuals[0].num_tokens,
        "prompt_tokens": result.token_map.query + 1,
        "answer_tokens": len(ids),
        "units": len(result.units),
        "batch_size": args.batch_size,
        "paths": res,
    }
    # exact per-unit ablation must recompute every position from the unit on; Captum runs all T
    length = result.token_map.length
    row["prefix_bound"] = len(result.units) * length / sum(length - u.first for u in result.units)
    if "captum" in out:
        ours_total = torch.tensor(result.delta_logprob.sum(1), device=out["captum"].device)
        order = [u.positions[0] for u in result.units]
        assert order == sorted(order), "vision units in sequence order"
        row["max_abs_diff_vs_captum"] = float((out["captum"].float() + ours_total).abs().max())
        ratios = [a / b for a, b in zip(res["captum"]["seconds"], res["vlmscope"]["seconds"])]
        row["captum_over_vlmscope"] = {
            "median": sorted(ratios)[len(ratios) // 2],
            "min": min(ratios),
            "max": max(ratios),
        }
    return row


def main(argv=None) -> int:
    from common import add_common, build_model, fmt_ratio, machine, setup, write

    ap = add_common(argparse.ArgumentParser(), "masking.json")
    ap.add_argument("--config", default="small", choices=list(CONFIGS))
    ap.add_argument("--tokens", type=int, default=144, help="vision tokens of the image (a square grid)")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32, help="variants per forward, both tools")
    args = ap.parse_args(argv)
    if args.small:
        args.tokens, args.new_tokens, args.rounds, args.config = 64, 8, 3, "tiny"
    setup(args)
    info = machine(args)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "m", "qwen2_5_vl", *CONFIGS[args.config], args.device)
        row = run(args, model_dir)
    p = row["paths"]
    line = f"  vlmscope / floor {fmt_ratio(p['vlmscope']['vs_floor'])}"
    if "captum" in p:
        line += (
            f", captum / vlmscope {fmt_ratio(row['captum_over_vlmscope'])}, "
            f"max |diff| {row['max_abs_diff_vs_captum']:.1e}; prefix-sharing bound {row['prefix_bound']:.2f}x"
        )
    print(line, flush=True)
    write(
        args.out,
        {
            "benchmark": "masking",
            "config": args.config,
            "decoder": {**CONFIGS[args.config][0], **(CONFIGS[args.config][1] or {})},
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "machine": info,
            "rows": [row],
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
