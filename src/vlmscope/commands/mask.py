"""`vlmscope mask`: which prompt tokens and image regions the answer depends on (token masking),
for one image + prompt or for every run of a YAML file."""

from __future__ import annotations

from . import add_example_args, add_model_args, check_example_args, claim_out_dir, finish_out_dir, load_from_args

# option flags default to None so that, with --config, only the flags given override the file
OPTION_FLAGS = (
    "mode",
    "perturbation",
    "window",
    "stride",
    "text_unit",
    "image_index",
    "layers",
    "edges",
    "occlusion",
    "max_new_tokens",
    "regenerate",
    "batch_size",
    "seed",
)


def _overrides(args) -> dict:
    return {name: getattr(args, name) for name in OPTION_FLAGS if getattr(args, name) not in (None, False)}


def cmd_mask(args) -> int:
    from ..errors import VlmscopeError

    if args.config:
        if args.image or args.prompt:
            raise VlmscopeError("give either IMAGE... --prompt P or --config FILE.yaml, not both")
        return _batch(args)
    if not args.prompt:
        raise VlmscopeError("give IMAGE... --prompt P, or --config FILE.yaml")
    from ..inputs import Example
    from ..methods.masking import MaskingOptions, mask_impact
    from ..methods.masking.options import check_static

    args.out = args.out or "vlmscope-out/mask"
    check_example_args(args)
    options = MaskingOptions(**_overrides(args))
    check_static(options)
    out_dir = claim_out_dir(args.out, "mask", args.overwrite)
    scope = load_from_args(args)
    result = mask_impact(scope, Example(args.prompt, images=args.image, answer=args.answer), options)
    out = result.save(out_dir)
    finish_out_dir(out_dir, "mask")
    print(f"answer: {result.answer_text!r} ({len(result.answer_ids)} tokens)")
    print(f"{len(result.units)} units masked ({result.settings['perturbation']}) in {result.seconds:.2f} s")
    _print_drops(result)
    print(f"wrote {out}/result.json, impacts.csv and pictures")
    return 0


def _print_drops(result, top: int = 5) -> None:
    """The units with the largest drop (log p(answer) clean - masked, the sign of impacts.csv)."""
    drop = result.impact("drop")
    order = [int(i) for i in drop.argsort()[::-1][:top]]
    if drop[order[0]] > 0:
        order = [i for i in order if drop[i] > 0]
        print("largest drops of the answer's log-probability (clean - masked; positive: the unit supports it):")
    else:
        print("no masking lowers the answer's log-probability; smallest rises (drop = clean - masked):")
    for i in order:
        change = "" if result.first_change[i] is None else f"  greedy answer changes at token {result.first_change[i]}"
        print(f"  drop {drop[i]:+9.4f}  {result.units[i].label!r}{change}")


def _batch(args) -> int:
    from ..methods.masking.config import run_config

    records, summary = run_config(
        args.config,
        lambda model: load_from_args(args, model),
        out=args.out,
        overrides=_overrides(args),
        claim=lambda path: claim_out_dir(path, "mask --config", args.overwrite),
    )
    for r in records:
        what = f"{r['answer']!r}, {r['units']} units, {r['seconds']} s" if r["status"] == "ok" else r["error"]
        print(f"  {r['name']:20s} {r['status']:5s}  {what}")
    finish_out_dir(summary.parent, "mask --config")
    failed = sum(r["status"] != "ok" for r in records)
    print(f"{len(records) - failed} of {len(records)} runs done; wrote {summary}")
    return 1 if failed else 0


def register(sub) -> None:
    from ..methods.masking.options import MaskingOptions

    p = sub.add_parser("mask", help="token masking impact of text tokens, image regions or both on the answer")
    add_model_args(p)
    add_example_args(p, out=None, images="*", prompt_required=False, max_new_tokens=None)
    # the defaults these flags take when neither they nor a --config file set them
    defaults = {"out": "vlmscope-out/mask (with --config: the file's out:, else masking-out/ beside it)",
                "max_new_tokens": str(MaskingOptions().max_new_tokens)}  # fmt: skip
    for action in p._actions:
        if action.dest in defaults:
            action.help = f"{action.help} (default: {defaults[action.dest]})"
    p.add_argument("--config", default=None, help="YAML file listing runs (images, prompts, settings)")
    p.add_argument("--mode", default=None, help="text, vision (default) or both")
    p.add_argument(
        "--perturbation", default=None, help="how a unit is masked: knockout (default), zero, mean, noise, occlude"
    )
    p.add_argument("--window", default=None, help="K: K x K vision tokens per unit (default 1), or 'image'")
    p.add_argument("--stride", type=int, default=None, help="window step (default: the window: tiled; 1: sliding)")
    p.add_argument("--text-unit", dest="text_unit", default=None, help="token (default) or word")
    p.add_argument("--image-index", dest="image_index", type=int, default=None, help="mask only the K-th image")
    p.add_argument("--layers", default=None, help="knockout only in these decoder layers: all, 0-3, n/2:, ...")
    p.add_argument("--edges", default=None, help="knockout only edges into: all, vision, question, last (comma list)")
    p.add_argument("--occlusion", default=None, help="occlude fill: grey (default) or blur")
    p.add_argument("--regenerate", action="store_true", help="also regenerate the answer under each masking")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="variants per forward (default 32)")
    p.add_argument("--seed", type=int, default=None, help="seed of the Gaussian noise (default 0)")
    p.set_defaults(func=cmd_mask)
