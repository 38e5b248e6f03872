"""Shared pieces of the benchmarks: the common flags, interleaved rounds with per-round ratios,
the machine's state, peak memory of a call, and the JSON every script writes.

Every benchmark runs its paths in the same process, interleaved (round r runs every path once,
in an order rotated by r), and reports for each path the median over rounds of its time divided
by the baseline's time in the same round, with the lowest and highest round: a busy machine
slows a whole round, and the ratio cancels most of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def add_common(ap: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; ratios are per round")
    ap.add_argument("--small", action="store_true", help="small sizes (what `make bench` runs)")
    ap.add_argument("--out", default=str(RESULTS / out))
    return ap


def setup(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def machine(args=None) -> dict:
    """What the numbers were measured on, and how busy it was when they started."""
    import torch

    out = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_start": list(os.getloadavg()),
    }
    if args is not None:
        out.update(device=args.device, dtype=args.dtype)
        if args.device == "cuda" and torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name()
    return out


def interleave(
    paths: dict[str, Callable[[], object]], rounds: int, baseline: str, device: str = "cpu", reps: int = 1
) -> dict:
    """Run every path `reps` times in a row per round (order rotated each round); per path:
    seconds per call in each round, and the median, min and max over rounds of its time / the
    baseline's time in that round. `reps` > 1 times runs of a few milliseconds over a span long
    enough that the machine's jitter averages out within the round."""
    names = list(paths)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            sync(device)
            t = time.perf_counter()
            for _ in range(reps):
                paths[n]()
            sync(device)
            seconds[n].append((time.perf_counter() - t) / reps)
    out = {}
    for n in names:
        ratios = [a / b for a, b in zip(seconds[n], seconds[baseline])]
        out[n] = {
            "seconds": seconds[n],
            "median_s": statistics.median(seconds[n]),
            "vs_" + baseline: {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        }
    return out


def ratio(res: dict, path: str, baseline: str) -> dict:
    return res[path]["vs_" + baseline]


def inverse(r: dict) -> dict:
    """baseline / path from path / baseline (the median of an odd number of rounds inverts exactly)."""
    return {"median": 1 / r["median"], "min": 1 / r["max"], "max": 1 / r["min"]}


def fmt_ratio(r: dict, digits: int = 2) -> str:
    """'1.02x (0.98-1.10)': the median over rounds, then the lowest and highest round."""
    return f"{r['median']:.{digits}f}x ({r['min']:.{digits}f}-{r['max']:.{digits}f})"


def write(path: str | Path, payload: dict) -> None:
    payload["machine"]["load_end"] = list(os.getloadavg())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}", flush=True)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """VmHWM: the peak resident set of this process image (ru_maxrss would include the parent's,
    inherited across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(fn, device: str = "cpu") -> tuple[float, int, object]:
    """(seconds, peak extra memory in bytes over the level before the call, result).

    GPU: torch's peak allocated memory. CPU: resident set size sampled every 2 ms.
    """
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t, torch.cuda.max_memory_allocated() - base, out
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        elapsed = time.perf_counter() - t
        stop.set()
        th.join()
    return elapsed, max(peak[0], rss_bytes()) - base, out


# Qwen2.5-VL-7B's shapes: what the FLOPs and memory of a real checkpoint depend on. tiny_config
# takes the sizes; FULL_7B_EXTRA sets the rest of its config.json that changes the cost.
FULL_7B = dict(text_layers=28, hidden=3584, heads=28, kv_heads=4, vision_depth=32, vision_hidden=1280, vision_heads=16)
FULL_7B_EXTRA = {
    "text_config": dict(intermediate_size=18944, vocab_size=152064),
    "vision_config": dict(intermediate_size=3420, window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
}


def build_model(out: Path, family: str, sizes: dict, extra: dict | None = None, device: str = "cpu") -> str:
    """A random model of `family` in `out` (see vlmscope.models.tiny.build_tiny_model)."""
    from vlmscope.models.tiny import build_tiny_model

    return str(build_tiny_model(family, out, overrides=extra, device=device, **sizes))
