"""How long the app takes to show a new map when a control changes (no model run): aggregate the
captured attention rows for new settings and draw the picture, as the app's map handler does.

    python benchmarks/app_latency.py [--model M] [--n 200] [--threads 1] [--out FILE.json]

Settings are drawn at random (token, layer range, head range, head and layer aggregation, sink
exclusion, colormap, view), each one new, so no cached map is reused. Prints median, 10th and
90th percentile and max, for the map alone and for map + picture.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="hub id or directory; none: the bundled shapes model")
    p.add_argument("--n", type=int, default=200, help="map changes timed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args()

    import torch

    import vlmscope
    from vlmscope.app.inputs import build_example
    from vlmscope.app.maps import COLORMAPS, VIEWS, MapSettings, Run, capture_plan, render, token_maps
    from vlmscope.app.stream import stream_answer

    torch.set_num_threads(args.threads)
    scope = vlmscope.load(args.model, device="cpu")
    image = ROOT / "src/vlmscope/assets/examples/shapes_demo.png"
    example, frames = build_example("What colour is the square?", [image], None)
    started = time.perf_counter()
    *_, answer = stream_answer(scope, example, capture_plan(scope), 16)
    generate_s = time.perf_counter() - started
    run = Run("bench", scope, example, answer, frames)
    n_layers, n_heads = scope.adapter.num_layers, scope.adapter.num_heads
    rng = random.Random(args.seed)
    maps_ms, total_ms = [], []
    for _ in range(args.n):
        lo, hi = sorted(rng.sample(range(n_layers), 2)) if n_layers > 1 else (0, 0)
        h0, h1 = sorted(rng.sample(range(n_heads), 2)) if n_heads > 1 else (0, 0)
        settings = MapSettings(
            layers=(lo, hi),
            heads=(h0, h1),
            head_agg=rng.choice(["mean", "max", "min"]),
            layer_agg=rng.choice(["mean", "max", "min"]),
            exclude_sinks=rng.random() < 0.5,
        )
        run.cache.clear()
        t0 = time.perf_counter()
        maps = token_maps(run, settings)
        t1 = time.perf_counter()
        cmap = rng.choice(COLORMAPS)
        render(maps, run, rng.randrange(len(answer.ids)), 0, None if cmap == "auto" else cmap, 0.75, rng.choice(VIEWS))
        t2 = time.perf_counter()
        maps_ms.append((t1 - t0) * 1000)
        total_ms.append((t2 - t0) * 1000)

    def summary(xs: list[float]) -> dict:
        q = statistics.quantiles(xs, n=10)
        return {"median": statistics.median(xs), "p10": q[0], "p90": q[-1], "max": max(xs)}

    result = {
        "model": scope.source,
        "layers": n_layers,
        "heads": n_heads,
        "vision_tokens": len(answer.token_map.vision_positions()),
        "answer_tokens": len(answer.ids),
        "n": args.n,
        "threads": args.threads,
        "generate_with_rows_s": generate_s,
        "map_ms": summary(maps_ms),
        "map_and_picture_ms": summary(total_ms),
    }
    for key in ("map_ms", "map_and_picture_ms"):
        s = result[key]
        spread = f"p10 {s['p10']:.2f}, p90 {s['p90']:.2f}, max {s['max']:.2f}"
        print(f"{key:>20}: median {s['median']:.2f} ms, {spread} (n={args.n})")
    print(f"{'generate + rows':>20}: {generate_s * 1000:.0f} ms (once per answer; not repeated on a change)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
