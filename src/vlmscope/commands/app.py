"""`vlmscope app`: the web app on the bundled model, or on one or more models given with --model.

Serves on 127.0.0.1 unless --host says otherwise; uploads are limited in size and pixels."""

from __future__ import annotations

import argparse
import time

from . import add_model_args, load_from_args

BUNDLED = "bundled"


def load_models(args) -> dict:
    """{display name: Scope} for every --model (the word 'bundled' or none: the bundled model)."""
    from pathlib import Path

    from ..errors import VlmscopeError

    names = args.model or [BUNDLED]
    if len(set(names)) != len(names):
        raise VlmscopeError(f"a model is given twice: {', '.join(names)}")
    models = {}
    for name in names:
        one = argparse.Namespace(**{**vars(args), "model": None if name == BUNDLED else name})
        label = "shapes (bundled)" if name == BUNDLED else Path(name.rstrip("/")).name or name
        while label in models:
            label += "'"
        models[label] = load_from_args(one)
    return models


def add_limit_args(p: argparse.ArgumentParser) -> None:
    from ..app.inputs import Limits

    d = Limits()
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload, in MB")
    g.add_argument("--max-pixels-per-image", type=int, default=d.max_pixels, help="largest image or frame, in pixels")
    g.add_argument("--max-images", type=int, default=d.max_images, help="most images per request")
    g.add_argument(
        "--max-frames", type=int, default=d.max_frames, help="most video frames per request (sampled evenly)"
    )
    g.add_argument(
        "--max-new-tokens-limit", type=int, default=d.max_new_tokens, help="longest answer a user can ask for"
    )


def limits_from_args(args):
    from ..app.inputs import Limits
    from ..errors import VlmscopeError

    for flag in ("max_upload_mb", "max_pixels_per_image", "max_images", "max_frames", "max_new_tokens_limit"):
        if getattr(args, flag) <= 0:
            raise VlmscopeError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    return Limits(
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels_per_image,
        max_images=args.max_images,
        max_frames=args.max_frames,
        max_new_tokens=args.max_new_tokens_limit,
    )


def cmd_app(args) -> int:
    from ..errors import VlmscopeError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VlmscopeError("the app needs Gradio: pip install 'vlmscope[app]'") from None
    if not 0 < args.port < 65536:
        raise VlmscopeError(f"--port must be in 1-65535, got {args.port}")
    limits = limits_from_args(args)
    from ..app.ui import build, launch

    models = load_models(args)
    blocks = build(models, limits)
    # served from threads; this thread waits, so that Ctrl-C reaches `main` (one line, status 130)
    # instead of Gradio's own handler, which closes the server and returns as if all went well
    try:
        launch(blocks, host=args.host, port=args.port, limits=limits, quiet=True, prevent_thread_lock=True)
        print(f"vlmscope app: {', '.join(models)} on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    finally:
        blocks.close(verbose=False)


def register(sub) -> None:
    p = sub.add_parser("app", help="the web app: generate, click a token, explore its maps; compare models")
    add_model_args(p, several=True)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    add_limit_args(p)
    p.set_defaults(func=cmd_app)
