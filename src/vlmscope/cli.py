"""The `vlmscope` command. Thin: parse, call the library, print. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import VlmscopeError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id or local directory (default: the bundled shapes model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device-map", default=None, help="'auto' to spread a large model over GPUs (accelerate)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own code (off by default)")


def _load(args):
    from .models.loading import load

    return load(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map,
                trust_remote_code=args.trust_remote_code)


def cmd_inspect(args) -> int:
    info = _load(args).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    llm, vis = info["llm"], info["vision"]
    print(f"{info['name']} ({info['family']})  {info['class']}  from {info['source']}")
    print(f"  LLM     {llm['layers']} layers, width {llm['hidden_size']}, {llm['heads']} heads "
          f"({llm['kv_heads']} kv), vocab {llm['vocab_size']}, attention {info['attn_implementation']}")
    print(f"  vision  {vis['blocks']} blocks, width {vis['hidden_size']} -> {vis['out_size']}, patch {vis['patch_size']}, "
          f"merge {vis['merge_size']}x{vis['merge_size']}, temporal patch {vis['temporal_patch_size']}"
          + (f", deepstack from blocks {vis['deepstack_visual_indexes']}" if vis["deepstack_visual_indexes"] else ""))
    print("  tokens  " + ", ".join(f"{k}={v}" for k, v in info["token_ids"].items()))
    print("  sites")
    for site, what in info["sites"].items():
        print(f"    {site:32s} {what}")
    return 0


def cmd_capture(args) -> int:
    import numpy as np

    from .inputs import Example

    scope = _load(args)
    ex = Example(args.prompt, images=args.image, answer=args.answer)
    run = scope.generate if args.generate else scope.forward
    kw = {"max_new_tokens": args.max_new_tokens} if args.generate else {}
    trace = run(ex, args.sites, layers=args.layers, tokens=args.tokens, reduce=args.reduce, **kw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: v[0].float().numpy() for k, v in trace.captures.items()}
    np.savez(out / "captures.npz", **arrays)
    (out / "token_map.json").write_text(json.dumps(trace.token_maps[0].to_dict()))
    if trace.generated_text:
        print(f"answer: {trace.generated_text[0]}")
    for k, v in arrays.items():
        print(f"  {k:32s} {tuple(v.shape)}  norm {np.linalg.norm(v):.3f}")
    print(f"wrote {out / 'captures.npz'} and {out / 'token_map.json'}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmscope", description="Look inside Qwen vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="family, widths, layer counts, token ids and sites of a model")
    _add_model_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("capture", help="capture sites for one image + prompt in one forward (or generate)")
    _add_model_args(p)
    p.add_argument("image", nargs="*", help="image path(s); none for a text-only prompt")
    p.add_argument("--prompt", required=True)
    p.add_argument("--answer", default=None, help="score this answer teacher-forced")
    p.add_argument("--sites", default="vision.merger,llm.layers", help="comma-separated site names")
    p.add_argument("--layers", default="all", help="all, halp, 0,8,-1, 2-5, n/2 ...")
    p.add_argument("--tokens", default="all", help="vision, vision_last, text, query, generated, all, image:K")
    p.add_argument("--reduce", default="none", help="none, mean, max, last")
    p.add_argument("--generate", action="store_true", help="capture during greedy generation")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", default="vlmscope-out/capture")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("demo", help="the main job on the bundled model (what `make demo` runs)")
    p.add_argument("--out", default="vlmscope-out/demo")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VlmscopeError as e:
        print(f"vlmscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
