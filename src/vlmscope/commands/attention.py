"""`vlmscope attention`: per-generated-token maps over the image, written as PNG/PDF/NPZ/HTML."""

from __future__ import annotations

from . import add_model_args, load_from_args


def cmd_attention(args) -> int:
    from ..inputs import Example
    from ..methods.attention_maps import explain
    from ..specs import parse_layers

    scope = load_from_args(args)
    ex = Example(args.prompt, images=args.image, answer=args.answer)
    result = explain(scope, ex, method=args.method, layers=args.layers, heads=args.heads, head_agg=args.agg,
                     layer_agg=args.layer_agg, max_new_tokens=args.max_new_tokens, exclude_sinks=args.exclude_sinks,
                     keep_text=args.text)
    if args.tokens != "all":
        keep = parse_layers(args.tokens, len(result.tokens), "generated token")
        result.maps, result.tokens = result.maps[keep], [result.tokens[j] for j in keep]
        result.token_ids = [result.token_ids[j] for j in keep]
        if result.text_maps is not None:
            result.text_maps = result.text_maps[keep]
    written = result.save(args.out, formats=tuple(args.formats.split(",")))
    print(f"answer: {result.answer}")
    if result.sinks:
        print(f"excluded attention sinks (vision token indices): {result.sinks}")
    for kind, path in written.items():
        print(f"  {kind:8s} {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("attention", help="per-token attention / rollout / gradient maps over the image")
    add_model_args(p)
    p.add_argument("image", nargs="+", help="image path(s)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--answer", default=None, help="explain this answer (teacher-forced) instead of generating")
    p.add_argument("--method", default="raw", choices=["raw", "rollout", "gradient"])
    p.add_argument("--layers", default="all", help="layer spec: all, halp, 0,8,-1, 10-20, n/2 ...")
    p.add_argument("--heads", default="all", help="head spec, same language as layers")
    p.add_argument("--agg", default="mean", choices=["mean", "max", "min"], help="aggregation over heads")
    p.add_argument("--layer-agg", default="mean", choices=["mean", "max", "min"], help="aggregation over layers")
    p.add_argument("--tokens", default="all", help="generated tokens to keep: all or i,j,...")
    p.add_argument("--exclude-sinks", action="store_true", help="drop attention-sink tokens and renormalise")
    p.add_argument("--text", action="store_true", help="also keep attention to the prompt's text tokens")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--formats", default="png,npz,html,pdf", help="comma-separated: png, npz, html, pdf")
    p.add_argument("--out", default="vlmscope-out/attention")
    p.set_defaults(func=cmd_attention)
