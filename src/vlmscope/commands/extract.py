"""`vlmscope extract`: features of a whole dataset into a crash-safe HDF5 store, batched,
resumable, on one process or many (torchrun / accelerate launch)."""

from __future__ import annotations

import sys

from .. import interrupts
from . import add_model_args, check_layers, check_positive, load_from_args

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT


def cmd_extract(args) -> int:
    """Ctrl-C ends the run with one line and status 130; finished parts stay, the part in
    progress is discarded, and --resume continues from there."""
    try:
        return _extract(args)
    except KeyboardInterrupt:
        from ..store.layout import finished_parts

        done = len(finished_parts(args.out))
        print(
            f"vlmscope: interrupted: {done} finished parts kept in {args.out}; rerun with --resume to continue",
            file=sys.stderr,
        )
        return INTERRUPTED


def _extract(args) -> int:
    from ..data.sources import open_source
    from ..extraction import extract, make_preset
    from ..extraction.distributed import agree, setup
    from ..files import check_writable
    from ..progress import showing
    from ..store.directory import check_directory
    from ..store.lock import check_free

    check_layers(args.layers)
    check_positive(args, "batch_size", "checkpoint_every", "limit")
    ctx, device = setup(args.device_map, args.device)

    def check():
        check_directory(args.out, None, args.resume)
        check_writable(args.out, "store")
        check_free(args.out)

    agree(ctx, check)
    columns = {
        k: v
        for k, v in (
            ("id", args.id_column),
            ("image", args.image_column),
            ("question", args.question_column),
            ("answer", args.answer_column),
        )
        if v
    }
    source = open_source(
        args.source,
        args.source_type,
        images_dir=args.images_dir,
        prompt=args.prompt,
        limit=3 if args.test else args.limit,
        columns=columns,
        split=args.split,
    )
    preset = make_preset(
        args.preset or ("custom" if args.sites else "halp"),
        layers=args.layers,
        sites=args.sites,
        tokens=args.tokens,
        reduce=args.reduce,
        generate=args.generate,
        max_new_tokens=args.max_new_tokens,
    )
    scope = load_from_args(args, device=device)
    summary = extract(
        scope,
        source,
        args.out,
        preset,
        batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        save_dtype=args.save_dtype,
        compression=args.compression,
        revision=args.revision,
        progress=showing(),  # off with --no-progress or off a terminal
        ctx=ctx,
    )
    interrupts.output_complete()  # every part this process owns is written
    for line in summary.lines():
        print(line)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="extract features of a dataset into an HDF5 store (batched, resumable)",
        description="Sources: a folder of images, a VQA CSV (question_id,image_id,question,answer), "
        "JSONL, or a Hugging Face dataset saved with save_to_disk. See docs/extraction.md.",
    )
    add_model_args(p)
    src = p.add_argument_group("source")
    src.add_argument("source", help="image folder, .csv, .jsonl, or a saved HF dataset directory")
    src.add_argument("--source-type", default=None, help="folder, csv, jsonl, hf (default: from the path)")
    src.add_argument(
        "--images-dir",
        default=None,
        help="where image paths of a CSV/JSONL/HF row point (default: images/ beside the file, "
        "else the file's folder); paths may not leave it",
    )
    src.add_argument(
        "--prompt", default=None, help="prompt for rows without a question (image folders: 'Describe the image.')"
    )
    src.add_argument("--split", default=None, help="HF dataset split (default: train, else the first)")
    src.add_argument("--id-column", default=None, help="default: question_id, id")
    src.add_argument("--image-column", default=None, help="default: image_id, image_name, image, image_path, images")
    src.add_argument("--question-column", default=None, help="default: question, prompt, query, text")
    src.add_argument("--answer-column", default=None, help="default: answer, gt_answer")
    src.add_argument("--limit", type=int, default=None, help="only the first N rows")
    src.add_argument("--test", action="store_true", help="only the first 3 rows")
    what = p.add_argument_group("what to extract")
    what.add_argument("--preset", default=None, help="halp (default), three-point, layers, custom (implied by --sites)")
    what.add_argument("--layers", default=None, help="layer spec (halp: halp; layers and custom: all)")
    what.add_argument("--sites", default=None, help="custom: comma-separated sites")
    what.add_argument(
        "--tokens", default=None, help="custom: all, vision, vision_last, text, query, generated, image:K"
    )
    what.add_argument("--reduce", default=None, help="custom: none, mean, max, last")
    what.add_argument("--generate", action="store_true", help="custom: capture during greedy generation")
    what.add_argument("--max-new-tokens", type=int, default=16, help="generated answer length (halp, custom)")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="output directory (refused if it holds another run)")
    run.add_argument("--batch-size", type=int, default=8, help="rows per forward / generate")
    run.add_argument(
        "--checkpoint-every", type=int, default=1000, help="rows per part: a crash loses at most the part in progress"
    )
    run.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    run.add_argument("--save-dtype", default="float32", help="stored precision: float32 or float16")
    run.add_argument("--compression", default="gzip", help="gzip (portable), lzf (faster), none")
    p.set_defaults(func=cmd_extract)
