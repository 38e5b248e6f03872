"""`vlmscope heads`: find the localisation heads of a model on questions with known object boxes."""

from __future__ import annotations

from . import add_box_source_args, add_model_args, check_out_dir, load_from_args


def cmd_heads(args) -> int:
    from pathlib import Path

    from ..errors import VlmscopeError
    from ..methods.faithfulness import box_items
    from ..methods.heads import discover

    if args.max_heads < 1:
        raise VlmscopeError(f"--max-heads must be at least 1, got {args.max_heads}")
    if args.target == "relied" and args.source != "shapes":
        raise VlmscopeError(
            "--target relied needs --source shapes (each object is erased in turn); a CSV row knows one box"
        )
    items = box_items(args.source, args.n, args.seed, args.images_dir)
    check_out_dir(Path(args.out).parent)
    scope = load_from_args(args)
    ranking = discover(scope, items, max_heads=args.max_heads, target=args.target)
    ranking.settings.update(source=args.source, seed=args.seed if args.source == "shapes" else None)
    every, top = ranking.all_heads_pointing, ranking.top_pointing
    print(f"{len(items)} questions with a box")
    if args.target == "relied":
        share = ranking.settings["relied_on_asked"]
        print(f"the answer relies most on the asked object in {share:.3f} of them (each object erased in turn)")
        print("pointing game at the object each answer relies on (95% interval):")
    else:
        print("pointing game at the asked object (95% interval):")
    print(f"  mean of every head: {every['mean']:.3f} [{every['lo']:.3f}, {every['hi']:.3f}]")
    spec = ",".join(f"{a}.{b}" for a, b in ranking.top)
    print(
        f"  selected heads {spec}: {top['mean']:.3f} [{top['lo']:.3f}, {top['hi']:.3f}] (selected on these questions)"
    )
    print(ranking.table())
    print(f"wrote {ranking.save(args.out)} (use it with --heads; score it on other questions with `vlmscope evaluate`)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("heads", help="rank every (layer, head) by pointing game on questions with object boxes")
    add_model_args(p)
    add_box_source_args(p, n=100, seed=3000, n_help="number of questions with a box")
    p.add_argument("--max-heads", type=int, default=8, help="largest head set the forward selection may pick")
    p.add_argument(
        "--target",
        choices=("asked", "relied"),
        default="asked",
        help="score heads against the asked object, or (shapes) the object the answer relies on",
    )
    p.add_argument("--out", default="vlmscope-out/heads.json", help="JSON file to write")
    p.set_defaults(func=cmd_heads)
