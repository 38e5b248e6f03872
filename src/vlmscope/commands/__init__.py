"""One module per CLI command, each with `register(subparsers)`; cli.COMMANDS lists them."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id or local directory (default: the bundled shapes model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--device-map", default=None, help="'auto' to spread a large model over GPUs (accelerate)")
    p.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own code (off by default)")


def load_from_args(args):
    from ..models.loading import load

    return load(args.model, device=args.device, dtype=args.dtype, device_map=args.device_map,
                trust_remote_code=args.trust_remote_code)
