"""`vlmscope attention`: per-generated-token maps over the image, written as PNG/PDF/NPZ/HTML."""

from __future__ import annotations

from . import (
    add_example_args,
    add_model_args,
    check_example_args,
    check_heads,
    check_layers,
    claim_out_dir,
    finish_out_dir,
    load_from_args,
)


def cmd_attention(args) -> int:
    from ..inputs import Example
    from ..methods.answer import Answer
    from ..methods.registry import map_method
    from ..specs import parse_layers

    check_example_args(args)
    options = {
        "layers": args.layers,
        "heads": args.heads,
        "head_agg": args.agg,
        "keep_text": args.text,
        "exclude_sinks": args.exclude_sinks,
    }
    if args.method == "raw":
        options["layer_agg"] = args.layer_agg
    method = map_method(args.method, **options)
    check_layers(args.layers)
    check_heads(args.heads)
    if args.tokens != "all":
        check_layers(args.tokens, "generated token")
    formats = tuple(f.strip() for f in args.formats.split(","))
    bad = [f for f in formats if f not in ("png", "npz", "html", "pdf")]
    if bad:
        from ..errors import VlmscopeError

        raise VlmscopeError(f"unknown format {bad[0]!r}; choose from png, npz, html, pdf")
    out = claim_out_dir(args.out, "attention", args.overwrite)
    scope = load_from_args(args)
    method.check(scope)
    ex = Example(args.prompt, images=args.image, answer=args.answer)
    answer = Answer.resolve(scope, ex, args.max_new_tokens, capture=method.capture_plan(scope))
    result = method.attribute(scope, ex, answer)
    if args.tokens != "all":
        keep = parse_layers(args.tokens, len(result.tokens), "generated token")
        result.maps, result.tokens = result.maps[keep], [result.tokens[j] for j in keep]
        result.token_ids = [result.token_ids[j] for j in keep]
        if result.text_maps is not None:
            result.text_maps = result.text_maps[keep]
    from ..viz.render import save_maps

    written = save_maps(result, out, formats=formats, question=args.prompt)
    finish_out_dir(out, "attention")
    print(f"answer: {result.answer}")
    if args.exclude_sinks:
        reasons = result.settings.get("sink_reasons", {})
        print(f"excluded attention sinks: {len(reasons) or 'none'}")
        for c in result.sinks:
            print(f"  {reasons[c]}")
    for kind, path in written.items():
        print(f"  {kind:8s} {path}")
    return 0


def register(sub) -> None:
    from ..methods.registry import MAP_METHODS

    p = sub.add_parser("attention", help="per-token maps over the image with one map method")
    add_model_args(p)
    add_example_args(p, out="vlmscope-out/attention")
    p.add_argument(
        "--method",
        default="raw",
        choices=list(MAP_METHODS),
        help="; ".join(f"{name}: {m.summary}" for name, m in MAP_METHODS.items()),
    )
    p.add_argument("--layers", default="all", help="layer spec: all, halp, 0,8,-1, 10-20, n/2: ...")
    p.add_argument(
        "--heads",
        default="all",
        help="heads: a spec in the layers language (every layer), layer.head pairs such as 1.3,0.2, "
        "or a heads.json from `vlmscope heads`",
    )
    p.add_argument("--agg", default="mean", choices=["mean", "max", "min"], help="aggregation over heads")
    p.add_argument("--layer-agg", default="mean", choices=["mean", "max", "min"], help="aggregation over layers (raw)")
    p.add_argument("--tokens", default="all", help="generated tokens to keep: all or i,j,...")
    p.add_argument("--exclude-sinks", action="store_true", help="drop attention-sink tokens and renormalise")
    p.add_argument("--text", action="store_true", help="also keep the weight of the prompt's text tokens")
    p.add_argument("--formats", default="png,npz,html,pdf", help="comma-separated: png, npz, html, pdf")
    p.set_defaults(func=cmd_attention)
