"""`vlmscope shapes`: write the synthetic shapes VQA data (CSV in the seeds' format + images)."""

from __future__ import annotations


def cmd_shapes(args) -> int:
    from ..data.shapes import TRAINING_SEEDS, export_vqa
    from ..errors import VlmscopeError
    from ..files import check_writable

    if args.n < 1:
        raise VlmscopeError(f"--n must be at least 1, got {args.n}")
    check_writable(args.out, "--out")
    difficulty = "hard" if args.hard else "easy"
    if args.seed in TRAINING_SEEDS and not args.hard:
        import sys

        print(f"vlmscope: warning: seed {args.seed} is the bundled model's training data", file=sys.stderr)
    csv_path = export_vqa(args.n, args.out, seed=args.seed, difficulty=difficulty)
    print(f"wrote {args.n} {difficulty} questions to {csv_path} (images in {csv_path.parent / 'images'})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("shapes", help="generate shapes scenes with ground-truth boxes and VQA questions")
    p.add_argument("--n", type=int, required=True, help="number of questions (one scene each)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="record i depends only on (seed, i); seeds 0 and 1 are the bundled model's training data, "
        "1000 its held-out set",
    )
    p.add_argument(
        "--hard",
        action="store_true",
        help="2-4 small, faded shapes that may overlap: a split where the bundled model makes mistakes",
    )
    p.set_defaults(func=cmd_shapes)
