"""Contextual-lens search: the approximate index vlmscope builds (IVF, nprobe calibrated to
recall@10 >= 0.95) against brute-force torch matmul + topk over the same stored unit vectors.

Queries: one image's worth of vision tokens (1024). Corpora: `uniform` random unit vectors (no
structure: the worst case for any approximate index) and `clustered` unit vectors (a mixture of
4096 directions plus Gaussian noise of norm ~0.5, closer to real token states, which repeat). Rounds are interleaved;
the ratio is brute / approximate per round, reported as the median with min and max.

    python benchmarks/lens.py --threads 1            # writes benchmarks/results/lens.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import rss_bytes  # noqa: E402

from vlmscope.methods.lens import ann  # noqa: E402

CHUNK = 65536
DEVICE, DTYPE = "cpu", torch.float32


def corpus(kind: str, n: int, dim: int, seed: int, centres: np.ndarray | None = None) -> np.ndarray:
    """n unit vectors, generated chunk by chunk into one float32 array."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, CHUNK):
        b = min(n, a + CHUNK)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        if kind == "clustered":
            x = centres[rng.integers(len(centres), size=b - a)] + 0.5 * x / np.sqrt(dim)
        out[a:b] = ann.normalize(x)
    return out


def brute(x: torch.Tensor, q: torch.Tensor, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by matmul + topk over chunks of the corpus (a [q, N] score matrix would not fit)."""
    best_s = torch.full((len(q), k), -float("inf"), device=q.device, dtype=q.dtype)
    best_i = torch.full((len(q), k), -1, dtype=torch.long, device=q.device)
    for a in range(0, len(x), 262144):
        s, i = (q @ x[a : a + 262144].T).topk(k, dim=1)
        s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i + a], 1)
        best_s, j = s.topk(k, dim=1)
        best_i = i.gather(1, j)
    return best_s, best_i


def run_case(kind: str, n: int, dim: int, queries: int, rounds: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    centres = ann.normalize(rng.standard_normal((4096, dim))) if kind == "clustered" else None
    rss0 = rss_bytes()
    x = corpus(kind, n, dim, seed, centres)
    q = corpus(kind, queries, dim, seed + 2, centres)
    calib = corpus(kind, 500, dim, seed + 3, centres)
    batches = lambda: (x[a : a + CHUNK] for a in range(0, n, CHUNK))  # noqa: E731

    t = time.perf_counter()
    flat, _ = ann.build(batches, dim, n, approx_above=n)
    flat_s = time.perf_counter() - t
    del flat
    t = time.perf_counter()
    index, info = ann.build(batches, dim, n, approx_above=0, calib_queries=calib)
    ivf_s = time.perf_counter() - t
    rss_index = rss_bytes() - rss0

    xt, qt = torch.from_numpy(x).to(DEVICE, DTYPE), torch.from_numpy(q).to(DEVICE, DTYPE)
    times = {"ivf": [], "brute": []}
    found = truth = None
    for r in range(rounds):
        for path in ("ivf", "brute") if r % 2 == 0 else ("brute", "ivf"):
            t = time.perf_counter()
            if path == "ivf":
                _, found = index.search(q, 10)
            else:
                _, truth = brute(xt, qt)
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
            times[path].append(time.perf_counter() - t)
    ratios = [b / a for a, b in zip(times["ivf"], times["brute"])]
    recall = ann.recall_at(found, truth.cpu().numpy())
    return {
        "data": kind,
        "vectors": n,
        "dim": dim,
        "queries": queries,
        "rounds": rounds,
        "build": {
            "flat_vectors_per_s": n / flat_s,
            "ivf_vectors_per_s": n / ivf_s,
            "ivf_build_s": ivf_s,
            "nlist": info["nlist"],
            "nprobe": info["nprobe"],
            "calibration_recall_at_10": info["recall_at_10"],
        },
        "query": {
            "ivf_s_median": statistics.median(times["ivf"]),
            "brute_s_median": statistics.median(times["brute"]),
            "ivf_queries_per_s": queries / statistics.median(times["ivf"]),
            "brute_queries_per_s": queries / statistics.median(times["brute"]),
            "speedup_median": statistics.median(ratios),
            "speedup_min": min(ratios),
            "speedup_max": max(ratios),
        },
        "recall_at_10": recall,
        "memory": {
            "corpus_bytes": int(x.nbytes),
            "ivf_index_bytes_est": int(n * (dim * 4 + 8)),
            "rss_after_build_bytes": int(rss_index),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and FAISS CPU threads")
    ap.add_argument(
        "--cases",
        default="clustered:1000000:128,clustered:500000:1024,uniform:1000000:128,uniform:500000:1024",
        help="data:vectors:dim, comma-separated",
    )
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lens.json"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where brute force runs")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="brute-force dtype")
    ap.add_argument("--small", action="store_true", help="one small case (what `make bench` runs)")
    args = ap.parse_args()
    if args.small:
        args.cases, args.rounds = "clustered:100000:128", 3
    global DEVICE, DTYPE
    DEVICE, DTYPE = args.device, getattr(torch, args.dtype)
    load_start = list(os.getloadavg())
    torch.set_num_threads(args.threads)
    ann.faiss_module().omp_set_num_threads(args.threads)
    results = []
    for case in args.cases.split(","):
        kind, n, dim = case.split(":")
        res = run_case(kind, int(n), int(dim), args.queries, args.rounds, args.seed)
        print(json.dumps(res), flush=True)
        results.append(res)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "machine": {
                        "cpu": platform.processor() or platform.machine(),
                        "threads": args.threads,
                        "torch": torch.__version__,
                        "faiss": ann.faiss_module().__version__,
                        "device": args.device,
                        "dtype": args.dtype,
                        "load_start": load_start,
                        "load_end": list(os.getloadavg()),
                    },
                    "cases": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
