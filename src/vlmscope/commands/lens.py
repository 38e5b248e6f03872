"""`vlmscope lens show|stats|index`: what vision tokens mean at each layer (logit, embedding and
contextual lenses), their norms against text tokens, and the caption index of the contextual lens.

The verb comes first so that an image path can never be mistaken for one."""

from __future__ import annotations

from pathlib import Path

from . import (
    add_model_args,
    check_example_args,
    check_file,
    check_layers,
    check_out_dir,
    check_positive,
    load_from_args,
)

_IMAGES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def cmd_show(args) -> int:
    from ..errors import VlmscopeError
    from ..inputs import Example
    from ..methods.lens import lens

    check_example_args(args)  # images, --out
    check_layers(args.layers)
    check_positive(args, "k")
    if args.kind == "contextual" and args.index is None:
        raise VlmscopeError("--kind contextual needs --index DIR (build one with `vlmscope lens index`)")
    if args.index is not None and not Path(args.index).is_dir():
        raise VlmscopeError(f"index directory not found: {args.index!r}")
    scope = load_from_args(args)
    result = lens(
        scope, Example(args.prompt, images=args.image), kind=args.kind, layers=args.layers, k=args.k, index=args.index
    )
    paths = result.save(args.out)
    last = result.layers[-1]
    words = result.top_words(last)
    print(f"{args.kind} lens: {result.num_tokens} vision tokens x layers {result.layers}, top {args.k}")
    t, h, w = result.grids[0]
    print(f"top readout at llm.layers.{last}, image 0 ({h} x {w} tokens):")
    for r in range(h):
        print("  " + " ".join(f"{words[r * w + c]!r:>12.12}" for c in range(w)))
    print(f"wrote {paths['json']} and {paths['html']}")
    return 0


def _examples(source: Path, prompt: str, limit: int | None):
    from ..errors import VlmscopeError
    from ..inputs import Example

    if source.is_file():
        return [Example(prompt, images=[source])]
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in _IMAGES)[:limit]
    if not files:
        raise VlmscopeError(f"{source} holds no images ({', '.join(_IMAGES)}) and no extraction store (run.json)")
    return [Example(prompt, images=[p]) for p in files]


def cmd_stats(args) -> int:
    from ..errors import VlmscopeError
    from ..methods.lens import layer_stats

    source = Path(args.source)
    if not source.exists():
        raise VlmscopeError(f"{source} does not exist: give an image, a folder of images or an extraction store")
    check_layers(args.layers)
    check_positive(args, "limit")
    check_out_dir(args.out)
    if source.is_dir() and (source / "run.json").exists():
        stats = layer_stats(source, layers=args.layers)
    else:
        stats = layer_stats(load_from_args(args), _examples(source, args.prompt, args.limit), layers=args.layers)
    paths = stats.save(args.out)
    print(f"{stats.images} images; tokens per layer: " + ", ".join(f"{k} {v}" for k, v in stats.counts.items()))
    print(f"{'layer':>5} {'vision p5/p50/p95':>26} {'text p5/p50/p95':>26}")
    for i in stats.layers:
        cols = []
        for kind in ("vision", "text"):
            s = stats.stats[kind][i]
            cols.append(f"{s['p5']:8.1f} {s['p50']:8.1f} {s['p95']:8.1f}" if stats.counts.get(kind) else f"{'-':>26}")
        print(f"{i:>5} {cols[0]:>26} {cols[1]:>26}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_index(args) -> int:
    from ..methods.lens import build_index

    check_file(args.captions, "caption file")
    check_layers(args.layers)
    check_positive(args, "batch_size", "part_size")
    check_out_dir(args.out)
    scope = load_from_args(args)
    out = build_index(
        scope,
        args.captions,
        args.layers,
        args.out,
        column=args.column,
        batch_size=args.batch_size,
        part_size=args.part_size,
        resume=args.resume,
        progress=print,
    )
    print(f"index written to {out}")
    return 0


def register(sub) -> None:
    from ..methods.lens import KINDS

    p = sub.add_parser("lens", help=f"lenses on vision tokens: show ({'/'.join(KINDS)}), stats, index")
    verbs = p.add_subparsers(dest="lens_command", required=True)

    show = verbs.add_parser("show", help="top-k readouts of every vision token at each layer; JSON + HTML page")
    add_model_args(show)
    show.add_argument("image", nargs="+", help="image path(s), or example:; the page shows the first")
    show.add_argument("--prompt", required=True, help="the prompt beside the image")
    show.add_argument(
        "--kind",
        default="logit",
        choices=KINDS,
        help="logit: the token's stream via the LM head; embedding: nearest input embeddings; value: what each "
        "layer's attention reads from the token, via the LM head; contextual: nearest caption tokens (needs --index)",
    )
    show.add_argument("--index", default=None, help="index directory from `vlmscope lens index` (contextual)")
    show.add_argument("--layers", default="all", help="all, halp, 0,8,-1, 2-5 ... (contextual: default the index's)")
    show.add_argument("--k", type=int, default=5, help="readouts kept per vision token and layer")
    show.add_argument("--out", default="vlmscope-out/lens", help="output directory (lens.json, lens.html)")
    show.set_defaults(func=cmd_show)

    st = verbs.add_parser("stats", help="L2 norms of vision vs text tokens per layer: JSON + PNG/PDF plot")
    add_model_args(st)
    st.add_argument("source", help="an image, a folder of images, or a store from `extract --preset layers`")
    st.add_argument("--prompt", default="Describe the image.", help="prompt beside each image (text tokens)")
    st.add_argument("--layers", default="all", help="layer spec: all, halp, 0,2,-1, n/2: ...")
    st.add_argument("--limit", type=int, default=None, help="at most this many images of a folder")
    st.add_argument("--out", default="vlmscope-out/lens-stats", help="output directory (JSON + PNG/PDF plot)")
    st.set_defaults(func=cmd_stats)

    ix = verbs.add_parser("index", help="run the LLM over a caption corpus and index its tokens per layer (FAISS)")
    add_model_args(ix)
    ix.add_argument("captions", help="a .txt (one caption a line), .csv or .jsonl file")
    ix.add_argument("--layers", required=True, help="layer spec: all, halp, 0,2,-1 ...")
    ix.add_argument("--out", required=True, help="index directory (new or empty; with --resume, the one to finish)")
    ix.add_argument("--column", default="caption", help="CSV column or JSONL field holding the caption")
    ix.add_argument("--batch-size", type=int, default=16, help="captions per forward")
    ix.add_argument("--part-size", type=int, default=512, help="captions per crash-safe part")
    ix.add_argument("--resume", action="store_true", help="finish an interrupted index in --out")
    ix.set_defaults(func=cmd_index)
