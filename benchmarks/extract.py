"""HALP extraction: `vlmscope extract --preset halp` vs the seed-style loop, and memory vs rows.

Seed-style loop (what the HALP extractor does today), per row, batch 1: the processor,
`model(**inputs, output_hidden_states=True)` (VF from a hook on the last vision block, VT and QT
picked from the hidden states), then `model.generate` for the answer, then one HDF5 group per
sample. vlmscope: one batched generate per batch whose prefill gives VF, VT and QT, written by
the store writer. Same model, same rows, same machine, same process.

Memory: `vlmscope extract` on 1k and 10k rows, each in its own process; the peak resident set
size must not grow with the number of rows.

    python benchmarks/extract.py [--rows 300] [--batch-size 16] [--memory-rows 1000,10000] [--device cpu]

The model is the bundled shapes model when it is installed, else a small random Qwen2.5-VL
(4 layers, width 256) from `vlmscope.models.tiny`. Prints a table; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def model_dir(tmp: Path, small: bool = False) -> tuple[str, str]:
    """(path, description): the bundled model, else a random one built here."""
    from vlmscope.assets import bundled_model_dir
    from vlmscope.models.tiny import build_tiny_model

    bundled = bundled_model_dir()
    if bundled is not None:
        return str(bundled), "bundled shapes model"
    if small:
        return str(build_tiny_model("qwen2_5_vl", tmp / "small")), "random Qwen2.5-VL, 3 layers, width 64"
    path = build_tiny_model("qwen2_5_vl", tmp / "model", text_layers=4, hidden=256, heads=8, kv_heads=4,
                            vision_hidden=64)
    return str(path), "random Qwen2.5-VL, 4 layers, width 256, vision width 64"


def seed_loop(scope, csv_path: Path, out: Path, layers: list[int], max_new_tokens: int, limit: int) -> int:
    """The seed's extractor, batch 1: forward with output_hidden_states, then generate, then a group per sample."""
    import csv

    import h5py
    import torch
    from PIL import Image

    model, proc = scope.model, scope.processor
    image_token = model.config.image_token_id
    visual = scope.adapter.visual
    out.mkdir(parents=True, exist_ok=True)
    f = h5py.File(out / "embeddings_part_001.h5", "w")
    rows = list(csv.DictReader(csv_path.open()))[:limit]
    for n, r in enumerate(rows):
        image = Image.open(csv_path.parent / "images" / f"{r['image_id']}.png").convert("RGB")
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
        text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        inputs = proc(text=[text], images=[image], return_tensors="pt").to(scope.device)
        got = {}
        hook = visual.blocks[-1].register_forward_hook(lambda m, a, o: got.__setitem__("vf", o))
        with torch.no_grad():
            hs = model(**inputs, output_hidden_states=True).hidden_states
        hook.remove()
        vf = (got["vf"][0] if isinstance(got["vf"], tuple) else got["vf"]).float().mean(0).cpu().numpy()
        last_image = int((inputs["input_ids"][0] == image_token).nonzero()[-1])
        with torch.no_grad():
            seq = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=proc.tokenizer.pad_token_id)
        answer = proc.tokenizer.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        g = f.create_group(f"question_id_{r['question_id']}")
        g["question"], g["image_id"], g["answer"], g["ground_truth_answer"] = r["question"], r["image_id"], answer, r["answer"]
        g["vision_only_representation"] = vf
        for name, pos in (("vision_token_representation", last_image), ("query_token_representation", -1)):
            sub = g.create_group(name)
            for i in layers:
                sub[f"layer_{i}"] = hs[i + 1][0, pos].float().cpu().numpy()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    f.close()
    return len(rows)


def _chunks(csv_path: Path, rows: int, n: int) -> list[Path]:
    """`n` CSVs of consecutive rows beside `csv_path` (so images/ is found the same way)."""
    lines = csv_path.read_text().splitlines()
    header, body = lines[0], lines[1:rows + 1]
    size = -(-len(body) // n)
    out = []
    for k in range(n):
        path = csv_path.with_name(f"chunk{k}.csv")
        path.write_text("\n".join([header, *body[k * size:(k + 1) * size]]) + "\n")
        out.append(path)
    return out


def speed(args, tmp: Path) -> dict:
    """Both paths over the same rows, in alternating chunks so that both see the same machine load."""
    import vlmscope
    from vlmscope.data.shapes import export_vqa
    from vlmscope.data.sources import open_source
    from vlmscope.extraction import extract, make_preset
    from vlmscope.specs import parse_layers

    path, what = model_dir(tmp)
    csv_path = export_vqa(args.rows, tmp / "data", seed=0)
    scope = vlmscope.load(path, device=args.device)
    layers = parse_layers("halp", scope.adapter.num_layers)
    preset = make_preset("halp", max_new_tokens=args.max_new_tokens)
    # warm-up both paths (the first calls with new shapes are several times slower on the CPU)
    seed_loop(scope, csv_path, tmp / "warm-seed", layers, args.max_new_tokens, 8)
    extract(scope, open_source(csv_path, limit=2 * args.batch_size), tmp / "warm", preset,
            batch_size=args.batch_size, progress=False)
    seed_s = ours_s = 0.0
    n = ours = 0
    for k, chunk in enumerate(_chunks(csv_path, args.rows, args.chunks)):
        t = time.perf_counter()
        n += seed_loop(scope, chunk, tmp / f"seed{k}", layers, args.max_new_tokens, args.rows)
        seed_s += time.perf_counter() - t
        t = time.perf_counter()
        summary = extract(scope, open_source(chunk), tmp / f"vlmscope{k}", preset, batch_size=args.batch_size,
                          progress=False)
        ours_s += time.perf_counter() - t
        ours += summary.rows
    assert ours == n
    return {"model": what, "rows": n, "chunks": args.chunks, "seed_seconds": seed_s, "vlmscope_seconds": ours_s,
            "seed_rows_per_s": n / seed_s, "vlmscope_rows_per_s": n / ours_s, "speedup": seed_s / ours_s,
            "dtype": scope.describe()["dtype"], "threads": __import__("torch").get_num_threads()}


def memory_worker(model: str, csv_path: str, rows: int, out: str, args) -> dict:
    import vlmscope
    from common import measure, rss_bytes
    from vlmscope.data.sources import open_source
    from vlmscope.extraction import extract, make_preset

    scope = vlmscope.load(model, device=args.device)
    after_load = rss_bytes()
    seconds, growth, summary = measure(lambda: extract(
        scope, open_source(csv_path, limit=rows), out, make_preset("halp", max_new_tokens=args.memory_new_tokens),
        batch_size=args.batch_size, checkpoint_every=1000, progress=False), args.device)
    return {"rows": summary.rows, "seconds": seconds, "rows_per_s": summary.rows / seconds,
            "peak_rss_mib": peak_rss() / 2**20, "rss_after_load_mib": after_load / 2**20,
            "growth_during_extract_mib": growth / 2**20}


def peak_rss() -> int:
    """VmHWM: the peak resident set of this process image (ru_maxrss would include the parent's,
    inherited across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def memory(args, tmp: Path) -> tuple[str, list[dict]]:
    from vlmscope.data.shapes import export_vqa

    sizes = [int(s) for s in args.memory_rows.split(",") if s]
    if not sizes:
        return "", []
    path, what = model_dir(tmp, small=True)
    csv_path = export_vqa(max(sizes), tmp / "memdata", seed=1)
    out = []
    for rows in sizes:
        cmd = [sys.executable, __file__, "--memory-worker", path, str(csv_path), str(rows), str(tmp / f"mem{rows}"),
               "--device", args.device, "--batch-size", str(args.batch_size),
               "--memory-new-tokens", str(args.memory_new_tokens)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"  memory: {rows} rows, peak RSS {out[-1]['peak_rss_mib']:.0f} MiB, "
              f"{out[-1]['rows_per_s']:.1f} rows/s", flush=True)
    return what, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--chunks", type=int, default=3, help="alternate the two paths over this many chunks of rows")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--memory-rows", default="1000,10000")
    ap.add_argument("--memory-new-tokens", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "extract.json"))
    ap.add_argument("--memory-worker", nargs=4, metavar=("MODEL", "CSV", "ROWS", "OUT"))
    args = ap.parse_args(argv)
    if args.memory_worker:
        model, csv_path, rows, out = args.memory_worker
        print(json.dumps(memory_worker(model, csv_path, int(rows), out, args)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        s = speed(args, Path(tmp))
        print(f"  speed: seed-style {s['seed_rows_per_s']:.2f} rows/s, vlmscope {s['vlmscope_rows_per_s']:.2f} rows/s",
              flush=True)
        mem_model, mem = memory(args, Path(tmp))
    print(f"\nHALP extraction, {s['rows']} shapes rows, {s['model']}, {args.device} ({s['threads']} threads), "
          f"{s['dtype']}, {args.max_new_tokens} new tokens")
    print("| path | rows/s | seconds |")
    print("|---|---|---|")
    print(f"| seed-style loop (batch 1, forward + generate) | {s['seed_rows_per_s']:.2f} | {s['seed_seconds']:.1f} |")
    print(f"| vlmscope extract --preset halp (batch {args.batch_size}) | {s['vlmscope_rows_per_s']:.2f} | "
          f"{s['vlmscope_seconds']:.1f} |")
    print(f"| speed-up | {s['speedup']:.2f}x | |")
    if mem:
        print(f"\nMemory of vlmscope extract --preset halp ({mem_model}, {args.memory_new_tokens} new tokens, "
              f"batch {args.batch_size}), one process per size")
        print("| rows | peak RSS MiB | RSS after model load MiB | growth during extraction MiB | rows/s |")
        print("|---|---|---|---|---|")
        for m in mem:
            print(f"| {m['rows']} | {m['peak_rss_mib']:.0f} | {m['rss_after_load_mib']:.0f} | "
                  f"{m['growth_during_extract_mib']:.0f} | {m['rows_per_s']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": args.device, "batch_size": args.batch_size,
                                          "max_new_tokens": args.max_new_tokens, "speed": s,
                                          "memory_model": mem_model, "memory_new_tokens": args.memory_new_tokens,
                                          "memory": mem}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
