"""Per-token attention maps: vlmscope vs plain generate vs the seed's eager path.

(a) plain greedy generate with SDPA; (b) vlmscope: attention rows of every layer and head for
every generated token (image columns), captured during the same generate; (c) the seed's way:
`attn_implementation="eager"`, `output_attentions=True`, every layer stored. Each (path, size)
runs in its own process so memory peaks do not mix. Prints a table; writes JSON.

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


def worker(path: str, model_dir: str, tokens: int, new_tokens: int, device: str) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText

    import vlmscope
    from common import measure
    from vlmscope import CapturePlan, Example

    torch.manual_seed(0)
    side = int(round(tokens ** 0.5)) * 28
    scope = vlmscope.load(model_dir, device=device, dtype="float32", max_pixels=side * side, min_pixels=side * side)
    ex = Example("Describe the picture in detail.", images=[_image(tokens)])
    batch = scope.prepare(ex).to(scope.input_device)
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
           "pad_token_id": scope.processor.tokenizer.pad_token_id}
    if path == "plain":
        fn = lambda: scope.model.generate(**batch.inputs, **gen)  # noqa: E731
    elif path == "vlmscope":
        plan = CapturePlan.of("llm.layers.attn", tokens="generated", columns="vision")
        fn = lambda: scope.generate(batch, plan, min_new_tokens=new_tokens, max_new_tokens=new_tokens)  # noqa: E731
    else:
        eager = AutoModelForImageTextToText.from_pretrained(model_dir, attn_implementation="eager",
                                                            dtype=torch.float32).to(device).eval()
        del scope.model
        fn = lambda: eager.generate(**batch.inputs, **gen, output_attentions=True,  # noqa: E731
                                    return_dict_in_generate=True)
    with torch.inference_mode():
        fn()  # warm-up
        best = None
        for _ in range(2):
            seconds, peak, _ = measure(fn, device)
            best = (seconds, peak) if best is None or seconds < best[0] else (best[0], max(best[1], peak))
    return {"path": path, "vision_tokens": tokens, "seconds": best[0], "peak_bytes": best[1]}


def build_model(out: Path) -> str:
    from vlmscope.models.tiny import build_tiny_model

    # a small decoder with enough heads and layers for attention to matter
    return str(build_tiny_model("qwen2_vl", out, text_layers=4, hidden=256, heads=8, kv_heads=4, vision_hidden=64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="64,256,1024,4096")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "attention.json"))
    ap.add_argument("--worker", nargs=3, metavar=("PATH", "MODEL", "TOKENS"))
    args = ap.parse_args(argv)
    if args.worker:
        path, model_dir, tokens = args.worker
        print(json.dumps(worker(path, model_dir, int(tokens), args.new_tokens, args.device)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model")
        for tokens in [int(s) for s in args.sizes.split(",")]:
            for path in ("plain", "vlmscope", "eager"):
                cmd = [sys.executable, __file__, "--worker", path, model_dir, str(tokens),
                       "--new-tokens", str(args.new_tokens), "--device", args.device]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(res.stderr[-2000:], file=sys.stderr)
                    return 1
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(f"  {path:9s} {tokens:5d} vision tokens: {rows[-1]['seconds']:.3f} s, "
                      f"{rows[-1]['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    table = []
    for tokens in sorted({r["vision_tokens"] for r in rows}):
        by = {r["path"]: r for r in rows if r["vision_tokens"] == tokens}
        table.append({
            "vision_tokens": tokens,
            "plain_s": by["plain"]["seconds"], "vlmscope_s": by["vlmscope"]["seconds"], "eager_s": by["eager"]["seconds"],
            "plain_mib": by["plain"]["peak_bytes"] / 2**20, "vlmscope_mib": by["vlmscope"]["peak_bytes"] / 2**20,
            "eager_mib": by["eager"]["peak_bytes"] / 2**20,
            "vlmscope_vs_plain_time": by["vlmscope"]["seconds"] / by["plain"]["seconds"],
            "eager_vs_vlmscope_time": by["eager"]["seconds"] / by["vlmscope"]["seconds"],
            "eager_vs_vlmscope_mem": by["eager"]["peak_bytes"] / max(by["vlmscope"]["peak_bytes"], 1),
        })
    print("\n| vision tokens | plain s | vlmscope s | eager s | vlmscope/plain time | eager/vlmscope time "
          "| plain MiB | vlmscope MiB | eager MiB | eager/vlmscope mem |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['vision_tokens']} | {r['plain_s']:.2f} | {r['vlmscope_s']:.2f} | {r['eager_s']:.2f} | "
              f"{r['vlmscope_vs_plain_time']:.2f}x | {r['eager_vs_vlmscope_time']:.2f}x | {r['plain_mib']:.0f} | "
              f"{r['vlmscope_mib']:.0f} | {r['eager_mib']:.0f} | {r['eager_vs_vlmscope_mem']:.1f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": args.device, "new_tokens": args.new_tokens, "rows": table,
                                          "raw": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
