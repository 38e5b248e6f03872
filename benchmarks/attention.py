"""Per-token attention maps: vlmscope vs plain generate (the floor) vs the seed's eager path.

(a) floor: plain greedy `model.generate` with SDPA; (b) vlmscope: attention rows of every layer
and head for every generated token (image columns), captured during the same generate; (c) peer,
the seed's way: `attn_implementation="eager"`, `output_attentions=True`, every layer returned.
Time: the paths interleaved in one process, the median over rounds of each path's time divided
by the floor's in the same round; a path shorter than `--min-seconds` (0.5) is called several times
in a row per round (as many as the floor needs to last that long), so a 40 ms generate is not
judged on one timer reading. Memory: each path alone in its own process.

    python benchmarks/attention.py [--sizes 64,256,1024,4096] [--new-tokens 32] [--threads 1]
        [--device cpu|cuda] [--dtype float32|bfloat16] [--config small|7b] [--rounds 5] [--min-seconds 0.5] [--small]
        [--overhead: also vlmscope's generate with no capture, and with one residual-stream capture]

`--config 7b`: random weights in Qwen2.5-VL-7B's shapes (28 layers, width 3584, MLP 18944, 28
heads, 4 key-value heads, vocabulary 152064; vision tower 32 blocks of width 1280 with its windows),
for a GPU: the same FLOPs and memory as the released checkpoint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import FULL_7B, FULL_7B_EXTRA  # noqa: E402

CONFIGS = {
    "small": ("qwen2_vl", dict(text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64), None),
    "7b": ("qwen2_5_vl", FULL_7B, FULL_7B_EXTRA),
}


def _image(tokens: int):
    import numpy as np
    from PIL import Image

    side = int(round(tokens**0.5)) * 28  # patch 14 x merge 2 per token
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def _paths(model_dir: str, tokens: int, new_tokens: int, args, which) -> dict:
    """name -> zero-argument callable running that path once."""
    import torch
    from transformers import AutoModelForImageTextToText

    import vlmscope
    from vlmscope import CapturePlan, Example

    side = int(round(tokens**0.5)) * 28
    scope = vlmscope.load(
        model_dir, device=args.device, dtype=args.dtype, max_pixels=side * side, min_pixels=side * side
    )
    batch = scope.prepare(Example("Describe the picture in detail.", images=[_image(tokens)])).to(scope.input_device)
    gen = {
        "max_new_tokens": new_tokens,
        "min_new_tokens": new_tokens,
        "do_sample": False,
        "pad_token_id": scope.processor.tokenizer.pad_token_id,
    }
    plan = CapturePlan.of("llm.layers.attn", tokens="generated", columns="vision")
    residual = CapturePlan.of("llm.layers", tokens="generated", layers=[0])
    paths = {
        "plain": lambda: scope.model.generate(**batch.inputs, **gen),
        "vlmscope": lambda: scope.generate(batch, plan, min_new_tokens=new_tokens, max_new_tokens=new_tokens),
        # where a small run's overhead lies: vlmscope's generate alone, then with one cheap capture
        "no_capture": lambda: scope.generate(batch, None, min_new_tokens=new_tokens, max_new_tokens=new_tokens),
        "one_residual": lambda: scope.generate(batch, residual, min_new_tokens=new_tokens, max_new_tokens=new_tokens),
    }
    if "eager" in which:
        eager = (
            AutoModelForImageTextToText.from_pretrained(
                model_dir, attn_implementation="eager", dtype=getattr(torch, args.dtype)
            )
            .to(args.device)
            .eval()
        )
        paths["eager"] = lambda: eager.generate(
            **batch.inputs, **gen, output_attentions=True, return_dict_in_generate=True
        )
    return {k: v for k, v in paths.items() if k in which}


def worker(mode: str, model_dir: str, tokens: int, args) -> dict:
    """mode 'time': every path in this process, interleaved. mode '<path>': peak memory of that
    one path, alone in its process."""
    import time

    import torch
    from common import interleave, measure, setup, sync

    setup(args)
    extra = ("no_capture", "one_residual") if args.overhead else ()
    which = ("plain", "vlmscope", *(("eager",) if args.eager else ()), *extra) if mode == "time" else (mode,)
    paths = _paths(model_dir, tokens, args.new_tokens, args, which)
    out_of_memory = []
    with torch.inference_mode():
        for name, fn in list(paths.items()):
            try:
                fn()  # warm-up
            except torch.OutOfMemoryError:  # the seed's eager path at a large size on a GPU
                del paths[name]
                out_of_memory.append(name)
                torch.cuda.empty_cache()
        if mode != "time":
            if out_of_memory:
                return {"path": mode, "vision_tokens": tokens, "peak_bytes": None}
            _, peak, _ = measure(paths[mode], args.device)
            return {"path": mode, "vision_tokens": tokens, "peak_bytes": peak}
        t = time.perf_counter()
        paths["plain"]()
        sync(args.device)
        reps = max(1, round(args.min_seconds / (time.perf_counter() - t)))
        res = interleave(paths, args.rounds, "plain", args.device, reps)
        return {"vision_tokens": tokens, "paths": res, "out_of_memory": out_of_memory, "calls_per_round": reps}


def build_model(out: Path, config: str, device: str) -> str:
    from common import build_model as build

    family, sizes, extra = CONFIGS[config]
    return build(out, family, sizes, extra, device)


def main(argv=None) -> int:
    from common import add_common, fmt_ratio, machine, ratio, setup, write

    ap = add_common(argparse.ArgumentParser(), "attention.json")
    ap.add_argument("--sizes", default="64,256,1024,4096")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--config", default="small", choices=list(CONFIGS))
    ap.add_argument("--no-eager", dest="eager", action="store_false", help="leave out the seed's eager path")
    ap.add_argument(
        "--min-seconds", type=float, default=0.5, help="call each path this long in a row per round (short runs)"
    )
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--overhead", action="store_true", help="also time generate with no capture and with one residual")
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "TOKENS"))
    args = ap.parse_args(argv)
    if args.small and args.sizes == ap.get_default("sizes"):
        args.sizes, args.new_tokens, args.rounds = "64,256", 8, 3
    if args.worker:
        mode, model_dir, tokens = args.worker
        print(json.dumps(worker(mode, model_dir, int(tokens), args)))
        return 0
    setup(args)
    info = machine(args)
    table = []
    passthrough = [
        "--new-tokens",
        str(args.new_tokens),
        "--device",
        args.device,
        "--rounds",
        str(args.rounds),
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
        "--min-seconds",
        str(args.min_seconds),
        *([] if args.eager else ["--no-eager"]),
        *(["--overhead"] if args.overhead else []),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model", args.config, args.device)
        for tokens in [int(s) for s in args.sizes.split(",")]:
            modes = ["time"] + (["plain", "vlmscope", *(["eager"] if args.eager else [])] if args.memory else [])
            res = {}
            for mode in modes:
                cmd = [sys.executable, __file__, "--worker", mode, model_dir, str(tokens), *passthrough]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode != 0:
                    print(run.stderr[-2000:], file=sys.stderr)
                    return 1
                res[mode] = json.loads(run.stdout.strip().splitlines()[-1])
            paths = res["time"]["paths"]
            row = {
                "vision_tokens": tokens,
                "paths": paths,
                "vlmscope_vs_plain": ratio(paths, "vlmscope", "plain"),
                **{
                    f"{k}_vs_plain": ratio(paths, k, "plain")
                    for k in ("eager", "no_capture", "one_residual")
                    if k in paths
                },
                "out_of_memory": res["time"]["out_of_memory"],
                "calls_per_round": res["time"]["calls_per_round"],
                "peak_mib": {
                    m: None if res[m]["peak_bytes"] is None else res[m]["peak_bytes"] / 2**20
                    for m in modes
                    if m != "time"
                },
            }
            table.append(row)
            extra = [k for k in ("no_capture", "one_residual") if k in paths]
            others = "".join(f", {k} {fmt_ratio(row[k + '_vs_plain'])}" for k in extra)
            ours = fmt_ratio(row["vlmscope_vs_plain"])
            print(f"  {tokens} vision tokens: vlmscope / plain {ours}{others}", flush=True)
            payload = {  # written after every size, so a long GPU run keeps what it finished
                "benchmark": "attention",
                "config": args.config,
                "model": {**CONFIGS[args.config][1], **(CONFIGS[args.config][2] or {})},
                "new_tokens": args.new_tokens,
                "rounds": args.rounds,
                "machine": info,
                "rows": table,
            }
            write(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
