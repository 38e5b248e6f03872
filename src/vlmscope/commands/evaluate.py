"""`vlmscope evaluate`: faithfulness of the map methods on questions with known object boxes."""

from __future__ import annotations

from . import add_box_source_args, add_model_args, check_out_dir, load_from_args


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from ..methods.faithfulness import box_items, evaluate
    from ..methods.heads import check_head_spec, pairs_text
    from ..methods.registry import check_method_names

    methods = check_method_names(args.methods)
    heads = check_head_spec(args.heads) if args.heads else None
    heads = pairs_text(heads) if isinstance(heads, list) else heads  # shown as 1.3,0.2 in the table
    if args.steps < 1:
        from ..errors import VlmscopeError

        raise VlmscopeError(f"--steps must be at least 1, got {args.steps}")
    items = box_items(args.source, args.n, args.seed, args.images_dir)
    check_out_dir(Path(args.out).parent)
    scope = load_from_args(args)
    result = evaluate(scope, seed=args.seed, methods=methods, steps=args.steps, heads=heads, items=items)
    result.settings["source"] = args.source
    print(result.summary())
    print(result.table())
    for kind, path in result.save(args.out).items():
        print(f"  {kind:8s} {path}")
    return 0


def register(sub) -> None:
    from ..methods.registry import MAP_METHODS

    p = sub.add_parser("evaluate", help="pointing game and deletion/insertion AUC of each map method, with intervals")
    add_model_args(p)
    add_box_source_args(p, n=40, seed=1000, n_help="number of questions about one object")
    p.add_argument("--methods", default=",".join(MAP_METHODS), help=f"comma-separated, from: {', '.join(MAP_METHODS)}")
    p.add_argument(
        "--heads",
        default=None,
        help="also score the head-reading methods with these heads: heads.json from `vlmscope heads` or "
        "layer.head pairs such as 1.3,0.2",
    )
    p.add_argument("--steps", type=int, default=8, help="points on each deletion / insertion curve")
    p.add_argument("--out", default="vlmscope-out/evaluate.json", help="JSON file; .md and .png are written beside it")
    p.set_defaults(func=cmd_evaluate)
