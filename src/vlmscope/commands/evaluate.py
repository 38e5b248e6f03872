"""`vlmscope evaluate`: faithfulness of the map methods on fresh shapes scenes with known boxes."""

from __future__ import annotations

from . import add_model_args, check_out_dir, load_from_args


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from ..methods.faithfulness import evaluate
    from ..methods.registry import check_method_names

    methods = check_method_names(args.methods)
    check_out_dir(Path(args.out).parent)
    scope = load_from_args(args)
    result = evaluate(scope, n=args.n, seed=args.seed, methods=methods, steps=args.steps)
    print(f"{result.samples} questions about one object; model accuracy {result.accuracy:.3f}")
    print(result.table())
    result.save(args.out)
    print(f"wrote {args.out}")
    return 0


def register(sub) -> None:
    from ..methods.registry import MAP_METHODS

    p = sub.add_parser("evaluate", help="pointing game and deletion/insertion AUC of each map method")
    add_model_args(p)
    p.add_argument("--n", type=int, default=40, help="number of shapes questions")
    p.add_argument("--seed", type=int, default=1000, help="scenes are generated fresh from this seed")
    p.add_argument("--methods", default=",".join(MAP_METHODS), help=f"comma-separated, from: {', '.join(MAP_METHODS)}")
    p.add_argument("--steps", type=int, default=8, help="points on each deletion / insertion curve")
    p.add_argument("--out", default="vlmscope-out/evaluate.json", help="JSON file to write")
    p.set_defaults(func=cmd_evaluate)
