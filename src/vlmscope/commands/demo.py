"""`vlmscope demo`: the main job on the bundled model (what `make demo` runs)."""

from __future__ import annotations


def cmd_demo(args) -> int:
    from ..demo import run_demo

    return run_demo(args)


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the bundled model (what `make demo` runs)")
    p.add_argument("--out", default="vlmscope-out/demo", help="output directory of the report")
    p.set_defaults(func=cmd_demo)
