"""`vlmscope probe train|apply`: hallucination probes on a feature store (docs/probes.md)."""

from __future__ import annotations

from pathlib import Path


def cmd_train(args) -> int:
    from ..files import check_writable
    from ..probes import train

    out = Path(args.out or f"{Path(args.store).resolve()}-probes-{args.probe}")
    check_writable(out, "--out")  # before the probes are trained

    def progress(row: dict) -> None:
        print(
            f"  {row['feature']:32s} AUROC {row['auroc_mean']:.3f} ± {row['auroc_std']:.3f}   "
            f"control {row['control_auroc_mean']:.3f} ± {row['control_auroc_std']:.3f}",
            flush=True,
        )

    result = train(
        args.store,
        label=args.label,
        probe=args.probe,
        features=args.features,
        folds=args.folds,
        seed=args.seed,
        progress=progress,
    )
    result.save(out)
    print()
    print(result.table())
    best = result.best()
    print(f"\nbest: {best['feature']} AUROC {best['auroc_mean']:.3f} ± {best['auroc_std']:.3f}")
    print(f"wrote {out}/result.json, result.csv, auroc_by_layer.png/.pdf, probe.safetensors, probe.json")
    return 0


def cmd_apply(args) -> int:
    import sys

    from ..files import check_writable
    from ..probes import apply

    out = Path(args.out or f"{Path(args.store).resolve()}-risk.csv")
    check_writable(out, "--out")
    scores = apply(args.probe_dir, args.store)
    for w in scores.warnings:
        print(f"vlmscope: warning: {w}", file=sys.stderr)
    scores.write_csv(out)
    print(f"wrote risk scores (P({scores.positive}) from {scores.best}) of {len(scores.index)} rows to {out}")
    for col, auc in scores.auroc.items():
        print(f"  {col:32s} AUROC on this store {auc:.3f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("probe", help="train hallucination probes (HALP) on a feature store, or apply saved ones")
    cmds = p.add_subparsers(dest="probe_command", required=True)
    t = cmds.add_parser("train", help="cross-validated probes per feature and layer, with controls and baselines")
    t.add_argument("store", help="a store written by `vlmscope extract` (e.g. --preset halp)")
    t.add_argument(
        "--label",
        default="correct",
        help="'correct' (positive: the generated answer is wrong) or a sample column with two values",
    )
    t.add_argument("--probe", default="logreg", choices=["logreg", "mlp"], help="logistic regression or HALP's MLP")
    t.add_argument(
        "--features",
        default=None,
        help="SPEC: vf, vt, qt, vt[LAYERS], qt[LAYERS], column names or globs, comma-separated (default: vf,vt,qt)",
    )
    t.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds")
    t.add_argument("--seed", type=int, default=0, help="seed of the folds, the shuffled-label control and the MLP")
    t.add_argument("--out", default=None, help="output directory (default: STORE-probes-PROBE beside the store)")
    t.set_defaults(func=cmd_train)
    a = cmds.add_parser("apply", help="score every row of a store with saved probes: per-row risk")
    a.add_argument("probe_dir", help="the --out directory of `vlmscope probe train`")
    a.add_argument("store", help="a store with the same feature columns (e.g. new rows of the same preset)")
    a.add_argument("--out", default=None, help="CSV file (default: STORE-risk.csv beside the store)")
    a.set_defaults(func=cmd_apply)
