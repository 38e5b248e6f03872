"""Run every benchmark, one process each, and print the README's tables from their JSON.

    python -m benchmarks.run_all --small          # what `make bench` runs: small sizes, minutes
    python -m benchmarks.run_all                  # the sizes of the README's tables
    python -m benchmarks.run_all --only attention,masking --device cuda --dtype bfloat16

Common flags (--threads, --device, --dtype, --rounds) go to every script; results land in
benchmarks/results/<name>.json (with --small: <name>-small.json, so the README's figures stay).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("attention", "extract", "masking", "capture", "lens")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", default=",".join(BENCHMARKS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    for name in names:
        out = HERE / "results" / f"{name}{'-small' if args.small else ''}.json"
        cmd = [
            sys.executable,
            str(HERE / f"{name}.py"),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--out",
            str(out),
        ]
        cmd += ["--small"] if args.small else []
        cmd += ["--rounds", str(args.rounds)] if args.rounds else []
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    from benchmarks.tables import main as tables

    tables(["--small"] if args.small else [])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
