"""`vlmscope inspect`: what a model is made of, the seeds' inspect_model_structure in one command."""

from __future__ import annotations

import json

from . import add_model_args, load_from_args


def cmd_inspect(args) -> int:
    info = load_from_args(args).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    llm, vis = info["llm"], info["vision"]
    print(f"{info['name']} ({info['family']})  {info['class']}  from {info['source']}")
    print(
        f"  LLM     {llm['layers']} layers, width {llm['hidden_size']}, {llm['heads']} heads "
        f"({llm['kv_heads']} kv), vocab {llm['vocab_size']}, attention {info['attn_implementation']}"
    )
    print(
        f"  vision  {vis['blocks']} blocks, width {vis['hidden_size']} -> {vis['out_size']}, "
        f"patch {vis['patch_size']}, "
        f"merge {vis['merge_size']}x{vis['merge_size']}, temporal patch {vis['temporal_patch_size']}"
        + (f", deepstack from blocks {vis['deepstack_visual_indexes']}" if vis["deepstack_visual_indexes"] else "")
    )
    print("  tokens  " + ", ".join(f"{k}={v}" for k, v in info["token_ids"].items()))
    print("  sites")
    for site, what in info["sites"].items():
        print(f"    {site:32s} {what}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("inspect", help="family, widths, layer counts, token ids and sites of a model")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=cmd_inspect)
