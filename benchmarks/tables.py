"""Print the README's "Measured" speed tables from benchmarks/results/*.json (Markdown).

    python -m benchmarks.tables [--small | --suffix=-cuda]

Every ratio is the median over interleaved rounds of per-round ratios, with the lowest and
highest round in brackets; the machine's load average (1 min) at the start and end of each run
is printed under its table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str, suffix: str) -> dict | None:
    path = RESULTS / f"{name}{suffix}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _r(r: dict, digits: int = 2) -> str:
    return f"{r['median']:.{digits}f}x ({r['min']:.{digits}f}-{r['max']:.{digits}f})"


def _inv(r: dict) -> dict:
    return {"median": 1 / r["median"], "min": 1 / r["max"], "max": 1 / r["min"]}


def _machine(m: dict) -> str:
    threads = m.get("torch_threads", m.get("threads"))
    where = m.get("gpu") or f"{m.get('cpus') or os.cpu_count()} CPUs, {threads} torch thread(s)"
    load = f"load {m['load_start'][0]:.1f} -> {m.get('load_end', [float('nan')])[0]:.1f}"
    return f"_{m.get('device', 'cpu')} ({where}), {m.get('dtype', 'float32')}, {load}_"


def attention(d: dict) -> list[str]:
    eager = any("eager_vs_plain" in r for r in d["rows"])
    head = "| vision tokens | plain generate s | vlmscope / plain |" + (" eager / plain |" if eager else "")
    head += " peak MiB: plain / vlmscope" + (" / eager |" if eager else " |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in d["rows"]:
        mem = r.get("peak_mib", {})
        mems = " / ".join(
            "OOM" if mem[p] is None else f"{mem[p]:.0f}" for p in ("plain", "vlmscope", "eager") if p in mem
        )
        line = f"| {r['vision_tokens']} | {r['paths']['plain']['median_s']:.2f} | {_r(r['vlmscope_vs_plain'])} |"
        if eager:
            oom = " not timed (OOM beside the SDPA model) |"
            line += f" {_r(r['eager_vs_plain'])} |" if "eager_vs_plain" in r else oom
        out.append(line + f" {mems or '-'} |")
    return out


def extract(d: dict) -> list[str]:
    s = d["speed"]
    out = ["| path | rows/s | speed vs the floor (generate alone) |", "|---|---|---|"]
    for k, v in s["paths"].items():
        name = {
            "floor": "floor: batched `model.generate`, inputs ready",
            "floor_with_processor": "floor + images and processor, in line",
            "floor_beside_processor_process": "floor, a second process preparing each next batch (nothing handed over)",
            "floor_fed_by_process": "floor, each batch handed over by that process through shared memory mapped once",
            "capture_only": "HALP's generate and captures, inputs ready, nothing stored",
            "capture_loader_thread": "the same, each batch from vlmscope's loader thread",
            "capture_fed_by_process": "the same, each batch handed over by a loader process as above",
        }.get(k, k)
        if k.startswith("vlmscope_"):
            name = f"`vlmscope extract --preset halp --compression {k.split('_', 1)[1]}`"
        size = s.get("store_bytes", {}).get(k.split("_", 1)[1]) if k.startswith("vlmscope_") else None
        name += f" ({size / 2**20:.1f} MiB)" if size else ""
        out.append(f"| {name} | {s['rows_per_s'][k]:.1f} | {_r(_inv(v['vs_floor']))} |")
    if s.get("writer"):
        out += [
            "",
            "| compression | writer time per 16 rows (width 3584, on its thread) | part of 1,008 rows |",
            "|---|---|---|",
        ]
        out += [
            f"| {c} | {v['seconds_per_batch'] * 1000:.1f} ms | {v['part_bytes'] / 2**20:.0f} MiB |"
            for c, v in s["writer"].items()
        ]
    out += _paired(s["paths"])
    mem = d.get("memory") or []
    if mem:
        out += ["", "| rows | peak RSS MiB | growth during extraction MiB |", "|---|---|---|"]
        out += [f"| {m['rows']} | {m['peak_rss_mib']:.0f} | {m['growth_during_extract_mib']:.0f} |" for m in mem]
    return out


_PAIRS = (  # (slower path, faster path, what the ratio measures)
    ("capture_loader_thread", "capture_only", "a loader thread preparing each next batch beside HALP's captures"),
    ("capture_loader_thread", "capture_fed_by_process", "a loader thread against a loader process, HALP's captures"),
    ("floor_fed_by_process", "floor_beside_processor_process", "handing each batch over through the ring"),
    ("vlmscope_gzip", "capture_loader_thread", "the runner and the store (gzip) on top of captures and loader"),
)


def _paired(paths: dict) -> list[str]:
    """Time of one path over another's in the same round: median (lowest-highest round)."""
    out = []
    for slow, fast, what in _PAIRS:
        if slow in paths and fast in paths:
            r = [a / b for a, b in zip(paths[slow]["seconds"], paths[fast]["seconds"])]
            ratio = {"median": statistics.median(r), "min": min(r), "max": max(r)}
            out.append(f"- {what}: {slow} / {fast} = {_r(ratio)}")
    return ["", *out] if out else []


def masking(d: dict) -> list[str]:
    out = [
        "| vision tokens | answer tokens | vlmscope / floor | Captum / vlmscope | prefix-sharing bound | "
        "max abs diff of the totals |",
        "|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        captum = _r(r["captum_over_vlmscope"]) if "captum_over_vlmscope" in r else "not installed"
        diff = f"{r['max_abs_diff_vs_captum']:.1e}" if "max_abs_diff_vs_captum" in r else "-"
        out.append(
            f"| {r['vision_tokens']} | {r['answer_tokens']} | {_r(r['paths']['vlmscope']['vs_floor'], 1)} | "
            f"{captum} | {r['prefix_bound']:.2f}x | {diff} |"
        )
    return out


def capture(d: dict) -> list[str]:
    out = ["| path | time / floor (one forward) |", "|---|---|"]
    for r in d["rows"]:
        for k, v in r["paths"].items():
            if k != "floor":
                out.append(f"| {k} | {_r(v['vs_floor'])} |")
    return out


def lens(d: dict) -> list[str]:
    out = ["| data | vectors x dim | IVF vs brute force | recall@10 |", "|---|---|---|---|"]
    for c in d["cases"]:
        q = c["query"]
        d = 0 if q["speedup_min"] >= 10 else 2
        out.append(
            f"| {c['data']} | {c['vectors']:,} x {c['dim']} | {q['speedup_median']:.{d}f}x "
            f"({q['speedup_min']:.{d}f}-{q['speedup_max']:.{d}f}) | {c['recall_at_10']:.3f} |"
        )
    return out


TABLES = {"extract": extract, "attention": attention, "masking": masking, "capture": capture, "lens": lens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="the tables of `make bench` (results/*-small.json)")
    ap.add_argument("--suffix", default="", help="read results/<name><suffix>.json, e.g. -cuda for the GPU runs")
    args = ap.parse_args(argv)
    for name, fn in TABLES.items():
        d = _load(name, "-small" if args.small else args.suffix)
        if d is None:
            print(f"\n({name}: no results yet)")
            continue
        print(f"\n**{name}**\n")
        print("\n".join(fn(d)))
        m = d.get("machine", {})
        if "load_start" in m:
            print("\n" + _machine(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
