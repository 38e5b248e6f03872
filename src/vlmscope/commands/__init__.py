"""One module per CLI command, each with `register(subparsers)`; cli.COMMANDS lists them.

The plumbing every command shares lives here: the model flags (all of `vlmscope.load`'s
options), the example flags (images, prompt, answer, answer length, output folder), and the
checks that must happen before a model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import interrupts
from ..files import check_writable
from ..limits import ANSWER_TOKENS


def add_model_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    """The model flags; `several`: --model may be repeated (a list, 'bundled' naming the shapes model)."""
    g = p.add_argument_group("model")
    if several:
        g.add_argument(
            "--model",
            action="append",
            default=None,
            help="hub id or local directory, repeatable; 'bundled' names the bundled shapes model "
            "(default: the bundled model alone)",
        )
    else:
        g.add_argument("--model", default=None, help="hub id or local directory (default: the bundled shapes model)")
    g.add_argument("--revision", default=None, help="model revision (hub branch, tag or commit)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    g.add_argument(
        "--dtype", default="auto", help="auto (bf16 on GPUs that have it, else fp32), float32, bfloat16, float16"
    )
    g.add_argument("--attn-implementation", default=None, help="sdpa (default), flash_attention_2, eager")
    g.add_argument("--device-map", default=None, help="'auto' to spread a large model over GPUs (accelerate)")
    g.add_argument("--min-pixels", type=int, default=None, help="processor's smallest image area in pixels")
    g.add_argument("--max-pixels", type=int, default=None, help="processor's largest image area in pixels")
    g.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own code (off by default)")


def load_from_args(args, model: str | None = None, device: str | None = None):
    """A Scope from every model flag; `model` (e.g. from a config file) is used when --model is not
    given, `device` (e.g. a process's own GPU under torchrun) instead of --device."""
    from ..scope import load

    return load(
        args.model or model,
        device=device or args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
        device_map=args.device_map,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
    )


def add_example_args(
    p: argparse.ArgumentParser,
    *,
    out: str | None,
    images: str = "+",
    prompt_required: bool = True,
    max_new_tokens: int | None = ANSWER_TOKENS,
) -> None:
    """IMAGE..., --prompt, --answer, --max-new-tokens and --out."""
    p.add_argument(
        "image",
        nargs=images,
        help="image path(s); example: (or example:2, example:3) names an example image shipped with vlmscope"
        + ("; none for a text-only prompt" if images == "*" else ""),
    )
    p.add_argument("--prompt", required=prompt_required, default=None, help="the question or instruction")
    p.add_argument("--answer", default=None, help="explain / score this answer (teacher-forced) instead of generating")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="longest generated answer")
    p.add_argument("--out", default=out, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace the output of an earlier run in --out")


def check_out_dir(path: str | Path) -> Path:
    """The output directory must be a directory (or not exist yet): checked before any model loads."""
    from ..errors import VlmscopeError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise VlmscopeError(f"--out {str(out)!r} is a file; give a directory")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise VlmscopeError(f"--out {str(out)!r} lies under the file {str(parent)!r}")
    check_writable(out, "--out")
    return out


MARKER = "vlmscope-output.json"


def claim_out_dir(path: str | Path, command: str, overwrite: bool = False) -> Path:
    """Make `path` this run's output directory, before any model loads.

    A directory holding an earlier run's output is refused unless `overwrite` (then its contents
    are removed first, so no stale file survives beside the new ones); a non-empty directory that
    holds no vlmscope output is never cleared. The marker file says whether the run completed:
    an interrupted run leaves ``"complete": false``.
    """
    import json
    import shutil

    from ..errors import VlmscopeError

    out = check_out_dir(path)
    if out.is_dir() and any(p.name != MARKER for p in out.iterdir()):  # a run that stopped before writing: reusable
        marker = out / MARKER
        if not marker.is_file():
            raise VlmscopeError(
                f"--out {str(out)!r} is not empty and holds no vlmscope output; choose another directory"
            )
        if not overwrite:
            try:
                earlier = json.loads(marker.read_text()).get("command", "?")
            except ValueError:
                earlier = "?"
            raise VlmscopeError(
                f"--out {str(out)!r} holds the output of an earlier run (vlmscope {earlier}); "
                "pass --overwrite to replace it, or choose another directory"
            )
        for item in out.iterdir():
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"command": command, "complete": False}))
    _CLAIMS.append((out, created))
    return out


_CLAIMS: list[tuple[Path, bool]] = []  # output directories claimed by this process, and whether it created them


def release_claims() -> None:
    """After a user error: an output directory that holds nothing but its incomplete marker is
    given back (the marker removed, the directory too if this run created it), so a run that
    failed before writing anything (a layer out of the loaded model's range) leaves no trace."""
    while _CLAIMS:
        out, created = _CLAIMS.pop()
        try:
            if [p.name for p in out.iterdir()] == [MARKER]:
                (out / MARKER).unlink()
                if created:
                    out.rmdir()
        except OSError:
            pass


def finish_out_dir(out: Path, command: str) -> None:
    """Mark the output directory complete (last step of a command)."""
    import json

    (out / MARKER).write_text(json.dumps({"command": command, "complete": True}))
    _CLAIMS[:] = [c for c in _CLAIMS if c[0] != out]
    interrupts.output_complete()  # a Ctrl-C from now on leaves the finished output as it is (exit 0)


def check_example_args(args) -> None:
    """Early checks of the example flags: image files exist, the answer length is positive."""
    from ..assets import resolve_example
    from ..errors import VlmscopeError
    from ..inputs import check_aspect, load_image

    if getattr(args, "image", None):
        args.image = [resolve_example(i) for i in args.image]
    for image in getattr(args, "image", None) or []:
        if not Path(image).is_file():
            raise VlmscopeError(f"image not found: {image!r}")
        check_aspect(load_image(image), image)  # unreadable, giant or too elongated: one line now
    n = getattr(args, "max_new_tokens", None)
    if n is not None and n < 1:
        raise VlmscopeError(f"--max-new-tokens must be >= 1, got {n}")
    if getattr(args, "out", None):
        check_out_dir(args.out)


def check_model_args(args) -> None:
    """The model flags that can be judged without loading anything: a local path that does not
    exist, the dtype, the device's syntax, the attention kernel, the device map and pixel limits."""
    from ..errors import VlmscopeError
    from ..models.loading import DTYPES, check_attention

    models = getattr(args, "model", None)
    for model in models if isinstance(models, list) else [models]:  # --model repeats in app and compare
        # a local path; not a hub id, whose name may hold dots (Qwen/Qwen2.5-VL-3B-Instruct)
        if model and model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
            raise VlmscopeError(f"model directory not found: {model!r}")
    dtype = getattr(args, "dtype", "auto")
    if dtype not in (None, "auto", *DTYPES):
        raise VlmscopeError(f"unknown --dtype {dtype!r}; use auto, {', '.join(sorted(set(DTYPES)))}")
    device = getattr(args, "device", "auto")
    if device not in (None, "auto"):
        import torch

        try:
            torch.device(device)
        except RuntimeError:
            raise VlmscopeError(f"unknown --device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    check_attention(getattr(args, "attn_implementation", None))
    device_map = getattr(args, "device_map", None)
    if device_map not in (None, *DEVICE_MAPS):
        raise VlmscopeError(f"unknown --device-map {device_map!r}; choose from {', '.join(DEVICE_MAPS)}")
    for flag in ("min_pixels", "max_pixels"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise VlmscopeError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named maps


def check_layers(spec, what: str = "layer") -> None:
    """A layer or head spec's syntax before the model loads (its range is checked after)."""
    from ..specs import check_layer_syntax

    if spec is not None:
        check_layer_syntax(spec, what)


def check_heads(spec) -> None:
    """A head spec before the model loads: layer.head pairs or a heads.json, else the layer-spec
    syntax applied to heads (its range is checked after)."""
    from ..methods.heads import check_head_spec, is_pairs

    check_head_spec(spec) if is_pairs(spec) else check_layers(spec, "head")


def add_box_source_args(p, n: int, seed: int, n_help: str) -> None:
    """Where the questions with object boxes come from (`evaluate`, `heads`)."""
    p.add_argument("--source", default="shapes", help="'shapes' (fresh scenes) or a VQA CSV with box_x0..box_y1")
    p.add_argument("--images-dir", default=None, help="images of a CSV source (default: images/ beside it)")
    p.add_argument("--n", type=int, default=n, help=n_help)
    p.add_argument("--seed", type=int, default=seed, help="shapes scenes are generated fresh from this seed")


def check_sites(names: str) -> None:
    """Site names that no registered family has, before the model loads (a name that only some
    family has is checked against the loaded model's own table)."""
    from ..errors import VlmscopeError
    from ..models.registry import FAMILIES
    from ..sites import match_group

    groups = sorted({s.group for cls in FAMILIES.values() for s in cls.sites})
    for name in [n.strip() for n in str(names).split(",")]:
        if not name or match_group(name, groups) is None:
            raise VlmscopeError(f"unknown site {name!r}; sites: {', '.join(groups)}")


def check_file(path: str | Path | None, what: str) -> None:
    """An input file that must exist, before the model loads."""
    from ..errors import VlmscopeError

    if path is not None and not Path(path).is_file():
        raise VlmscopeError(f"{what} not found: {str(path)!r}")


def check_positive(args, *flags: str) -> None:
    """Counts given on the command line (--k, --batch-size, ...) must be >= 1."""
    from ..errors import VlmscopeError

    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise VlmscopeError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
