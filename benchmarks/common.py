"""Shared helpers for the benchmarks: peak memory of a call, on the GPU or as process RSS."""

from __future__ import annotations

import os
import threading
import time


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
