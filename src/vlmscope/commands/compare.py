"""`vlmscope compare`: the same image(s) and prompt on several models, one HTML report: answers side
by side and, for every token the answers share, each model's map over the pixels."""

from __future__ import annotations

import json

from ..limits import ANSWER_TOKENS
from . import add_model_args, check_example_args, claim_out_dir, finish_out_dir


def cmd_compare(args) -> int:
    from ..app.compare import compare, comparison_html
    from ..app.maps import MapSettings
    from ..errors import VlmscopeError
    from ..inputs import Example
    from ..methods.registry import check_method_names
    from .app import load_models

    check_example_args(args)
    if not args.model or len(args.model) < 2:
        raise VlmscopeError("compare needs at least two --model flags ('bundled' names the shapes model)")
    (method,) = check_method_names([args.method])
    out = claim_out_dir(args.out, "compare", args.overwrite)
    models = load_models(args)
    example = Example(args.prompt, images=list(args.image))  # paths: warnings and pages name the files
    settings = MapSettings(method=method, layers=_bounds(args.layers), heads=_bounds(args.heads), head_agg=args.agg)
    comp = compare(models, example, None, settings, same_answer=args.same_answer, max_new_tokens=args.max_new_tokens)
    (out / "compare.html").write_text(comparison_html(comp))
    (out / "compare.json").write_text(json.dumps(comp.to_dict()))
    finish_out_dir(out, "compare")
    for run in comp.runs:
        print(f"{run.model}: {run.answer.text}")
    print(f"shared tokens: {', '.join(repr(t) for t, _ in comp.rows) or 'none'}")
    print(f"report: {out / 'compare.html'}")
    return 0


def _bounds(spec: str) -> tuple[int, int]:
    """'all', 'i' or 'i-j' (inclusive; negative counts from the end) -> (first, last)."""
    from ..errors import VlmscopeError

    if spec == "all":
        return (0, -1)
    try:
        if "-" in spec.lstrip("-"):
            i = spec.index("-", 1)
            return int(spec[:i]), int(spec[i + 1 :])
        return int(spec), int(spec)
    except ValueError:
        raise VlmscopeError(f"bad range {spec!r}: give all, i or i-j (inclusive, e.g. 1-3)") from None


def register(sub) -> None:
    from ..methods.registry import MAP_METHODS

    p = sub.add_parser("compare", help="the same image and prompt on several models: answers and maps side by side")
    add_model_args(p, several=True)
    p.add_argument("image", nargs="+", help="image path(s); example: names the example image")
    p.add_argument("--prompt", required=True, help="the question or instruction")
    p.add_argument("--method", default="raw", choices=list(MAP_METHODS), help="map method")
    p.add_argument("--layers", default="all", help="layer range: all, i or i-j (clipped to each model)")
    p.add_argument("--heads", default="all", help="head range: all, i or i-j (clipped to each model)")
    p.add_argument("--agg", default="mean", choices=["mean", "max", "min"], help="aggregation over heads")
    p.add_argument("--same-answer", action="store_true", help="every model explains the first model's answer")
    p.add_argument("--max-new-tokens", type=int, default=ANSWER_TOKENS, help="longest generated answer")
    p.add_argument("--out", default="vlmscope-out/compare", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace the output of an earlier run in --out")
    p.set_defaults(func=cmd_compare)
