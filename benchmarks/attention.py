"""Per-token attention maps: vlmscope vs plain generate vs the seed's eager path.

(a) plain greedy generate with SDPA; (b) vlmscope: attention rows of every layer and head for
every generated token (image columns), captured during the same generate; (c) the seed's way:
`attn_implementation="eager"`, `output_attentions=True`, every layer stored. Times: the three
paths interleaved in one process, best of --reps. Memory: each path alone in its own process.
Prints a table; writes JSON.

    python benchmarks/attention.py [--sizes 64,256,1024,4096] [--new-tokens 32] [--device cpu]
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


def _image(tokens: int):
    import numpy as np
    from PIL import Image

    side = int(round(tokens ** 0.5)) * 28  # patch 14 x merge 2 per token
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))


def _paths(model_dir: str, tokens: int, new_tokens: int, device: str, which) -> dict:
    """name -> zero-argument callable running that path once."""
    import torch
    from transformers import AutoModelForImageTextToText

    import vlmscope
    from vlmscope import CapturePlan, Example

    side = int(round(tokens ** 0.5)) * 28
    scope = vlmscope.load(model_dir, device=device, dtype="float32", max_pixels=side * side, min_pixels=side * side)
    batch = scope.prepare(Example("Describe the picture in detail.", images=[_image(tokens)])).to(scope.input_device)
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
           "pad_token_id": scope.processor.tokenizer.pad_token_id}
    plan = CapturePlan.of("llm.layers.attn", tokens="generated", columns="vision")
    paths = {
        "plain": lambda: scope.model.generate(**batch.inputs, **gen),
        "vlmscope": lambda: scope.generate(batch, plan, min_new_tokens=new_tokens, max_new_tokens=new_tokens),
    }
    if "eager" in which:
        eager = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation="eager",
                                                            dtype=torch.float32).to(device).eval()
        paths["eager"] = lambda: eager.generate(**batch.inputs, **gen, output_attentions=True,
                                                return_dict_in_generate=True)
    return {k: v for k, v in paths.items() if k in which}


def worker(mode: str, model_dir: str, tokens: int, new_tokens: int, device: str, reps: int,
           threads: int = 0) -> dict:
    """mode 'time': every path in this process, interleaved, best of `reps` (a busy machine only
    ever slows a run down). mode '<path>': peak memory of that one path, alone in its process."""
    import torch

    from common import measure

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    which = ("plain", "vlmscope", "eager") if mode == "time" else (mode,)
    paths = _paths(model_dir, tokens, new_tokens, device, which)
    with torch.inference_mode():
        for fn in paths.values():
            fn()  # warm-up
        if mode != "time":
            _, peak, _ = measure(paths[mode], device)
            return {"path": mode, "vision_tokens": tokens, "peak_bytes": peak}
        best = {name: float("inf") for name in paths}
        for _ in range(reps):
            for name, fn in paths.items():
                best[name] = min(best[name], measure(fn, device)[0])
    return {"vision_tokens": tokens, "seconds": best}


def build_model(out: Path) -> str:
    from vlmscope.models.tiny import build_tiny_model

    # a small decoder with enough heads and layers for attention to matter
    return str(build_tiny_model("qwen2_vl", out, text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,256,1024,4096")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=str(HERE / "results" / "attention.json"))
    ap.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "TOKENS"))
    args = ap.parse_args(argv)
    if args.worker:
        mode, model_dir, tokens = args.worker
        print(json.dumps(worker(mode, model_dir, int(tokens), args.new_tokens, args.device, args.reps, args.threads)))
        return 0
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model")
        for tokens in [int(s) for s in args.sizes.split(",")]:
            res = {}
            for mode in ("time", "plain", "vlmscope", "eager"):
                cmd = [sys.executable, __file__, "--worker", mode, model_dir, str(tokens),
                       "--new-tokens", str(args.new_tokens), "--device", args.device, "--reps", str(args.reps),
                       "--threads", str(args.threads)]
                run = subprocess.run(cmd, capture_output=True, text=True)
                if run.returncode != 0:
                    print(run.stderr[-2000:], file=sys.stderr)
                    return 1
                res[mode] = json.loads(run.stdout.strip().splitlines()[-1])
            t = res["time"]["seconds"]
            mem = {p: res[p]["peak_bytes"] / 2**20 for p in ("plain", "vlmscope", "eager")}
            row = {"vision_tokens": tokens, **{f"{p}_s": t[p] for p in t}, **{f"{p}_mib": m for p, m in mem.items()},
                   "vlmscope_vs_plain_time": t["vlmscope"] / t["plain"],
                   "eager_vs_vlmscope_time": t["eager"] / t["vlmscope"],
                   "vlmscope_vs_plain_mem": (mem["vlmscope"] + 1) / (mem["plain"] + 1),
                   "eager_vs_vlmscope_mem": (mem["eager"] + 1) / (mem["vlmscope"] + 1)}
            table.append(row)
            print(json.dumps(row), flush=True)
    print("\n| vision tokens | plain s | vlmscope s | eager s | vlmscope/plain | eager/vlmscope "
          "| plain MiB | vlmscope MiB | eager MiB | eager/vlmscope mem |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['vision_tokens']} | {r['plain_s']:.2f} | {r['vlmscope_s']:.2f} | {r['eager_s']:.2f} | "
              f"{r['vlmscope_vs_plain_time']:.2f}x | {r['eager_vs_vlmscope_time']:.2f}x | {r['plain_mib']:.0f} | "
              f"{r['vlmscope_mib']:.0f} | {r['eager_mib']:.0f} | {r['eager_vs_vlmscope_mem']:.1f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": args.device, "new_tokens": args.new_tokens, "reps": args.reps,
                                          "threads": args.threads,
                                          "note": "memory: peak extra RSS (CPU) or allocated (GPU) over the level "
                                                  "before the call, +1 MiB in ratios", "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
