"""`vlmscope capture`: capture sites for one image + prompt, written as .npz + token map JSON."""

from __future__ import annotations

import json

from . import (
    add_example_args,
    add_model_args,
    check_example_args,
    check_layers,
    check_sites,
    claim_out_dir,
    finish_out_dir,
    load_from_args,
)


def cmd_capture(args) -> int:
    import numpy as np

    from ..capture.plan import CapturePlan
    from ..inputs import Example
    from ..specs import parse_reduction, parse_selection

    check_example_args(args)
    check_sites(args.sites)
    check_layers(args.layers)
    parse_selection(args.tokens), parse_reduction(args.reduce)
    plan = CapturePlan.of(args.sites, layers=args.layers, tokens=args.tokens, reduce=args.reduce)
    out = claim_out_dir(args.out, "capture", args.overwrite)
    scope = load_from_args(args)
    ex = Example(args.prompt, images=args.image, answer=args.answer)
    run = scope.generate if args.generate else scope.forward
    kw = {"max_new_tokens": args.max_new_tokens} if args.generate else {}
    trace = run(ex, plan, **kw)
    arrays = {k: v[0].float().numpy() for k, v in trace.captures.items()}
    np.savez(out / "captures.npz", **arrays)
    (out / "token_map.json").write_text(json.dumps(trace.token_maps[0].to_dict()))
    if trace.generated_text:
        print(f"answer: {trace.generated_text[0]}")
    for k, v in arrays.items():
        print(f"  {k:32s} {tuple(v.shape)}  norm {np.linalg.norm(v):.3f}")
    finish_out_dir(out, "capture")
    print(f"wrote {out / 'captures.npz'} and {out / 'token_map.json'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("capture", help="capture sites for one image + prompt in one forward (or generate)")
    add_model_args(p)
    add_example_args(p, out="vlmscope-out/capture", images="*")
    p.add_argument("--sites", default="vision.merger,llm.layers", help="comma-separated site names")
    p.add_argument("--layers", default="all", help="all, halp, 0,8,-1, 2-5, n/2 ...")
    p.add_argument("--tokens", default="all", help="vision, vision_last, text, query, generated, all, image:K")
    p.add_argument("--reduce", default="none", help="none, mean, max, last")
    p.add_argument("--generate", action="store_true", help="capture during greedy generation")
    p.set_defaults(func=cmd_capture)
