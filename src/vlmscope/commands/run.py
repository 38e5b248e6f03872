"""`vlmscope run`: the main job. Answer the prompt, print the answer, and write one
self-contained HTML report with a map of every generated token for every method."""

from __future__ import annotations

from . import (
    add_example_args,
    add_model_args,
    check_example_args,
    check_heads,
    claim_out_dir,
    finish_out_dir,
    load_from_args,
)


def cmd_run(args) -> int:
    from ..methods.registry import check_method_names
    from ..report import run_report

    check_example_args(args)
    methods = check_method_names(args.methods)
    check_heads(args.heads)
    out = claim_out_dir(args.out, "run", args.overwrite)
    scope = load_from_args(args)
    answer, path = run_report(
        scope,
        args.image,
        args.prompt,
        out,
        methods=methods,
        max_new_tokens=args.max_new_tokens,
        answer=args.answer,
        lens=None if args.lens == "none" else args.lens,
        text=args.text,
        heads=args.heads,
    )
    finish_out_dir(out, "run")
    print(answer)
    print(f"report: {path}")
    return 0


def register(sub) -> None:
    from ..methods.lens import KINDS
    from ..methods.registry import MAP_METHODS

    p = sub.add_parser("run", help="answer a prompt about an image and write an HTML report of per-token maps")
    add_model_args(p)
    add_example_args(p, out="vlmscope-out/run")
    p.add_argument(
        "--methods",
        default=",".join(MAP_METHODS),
        help=f"comma-separated map methods in the report, from: {', '.join(MAP_METHODS)}",
    )
    p.add_argument(
        "--lens",
        default="logit",
        choices=[k for k in KINDS if k != "contextual"] + ["none"],
        help="lens view of the vision tokens in the report (the contextual lens needs an index: "
        "use `vlmscope lens show`)",
    )
    p.add_argument(
        "--text", action="store_true", help="also map the prompt's text tokens (text importance in the report)"
    )
    p.add_argument(
        "--heads",
        default="all",
        help="heads the attention-based methods read: a spec in the layers language (every layer), layer.head "
        "pairs such as 1.3,0.2, or a heads.json from `vlmscope heads`",
    )
    p.set_defaults(func=cmd_run)
