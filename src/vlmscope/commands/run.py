"""`vlmscope run`: the main job. Answer the prompt, print the answer, and write one
self-contained HTML report with a map of every generated token for every method."""

from __future__ import annotations

from . import add_model_args, load_from_args


def cmd_run(args) -> int:
    from ..report import run_report

    scope = load_from_args(args)
    answer, path = run_report(scope, args.image, args.prompt, args.out, methods=args.methods.split(","),
                              max_new_tokens=args.max_new_tokens)
    print(answer)
    print(f"report: {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="answer a prompt about an image and write an HTML report of per-token maps")
    add_model_args(p)
    p.add_argument("image", nargs="+", help="image path(s)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--methods", default="raw,rollout,gradient,masking", help="map methods in the report")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", default="vlmscope-out/run")
    p.set_defaults(func=cmd_run)
