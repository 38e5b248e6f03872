"""`vlmscope store info|verify|export`: what a feature store holds, whether every part reads, and the
store as .npy files or Parquet."""

from __future__ import annotations

import json
from pathlib import Path


def _shape(shape: list[int], ragged: bool) -> str:
    return "[" + ", ".join((["n_i"] if ragged else []) + [str(s) for s in shape]) + "]"


def cmd_info(args) -> int:
    from ..store import open as open_store

    with open_store(args.path) as store:
        info = store.info()
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        m, r = info["model"], info["run"]
        preset = r.get("preset", {})
        opts = ", ".join(f"{k} {v}" for k, v in preset.items() if k != "name")
        src = r.get("source", {})
        print(f"store    {info['path']}")
        print(
            f"model    {m.get('source')} (revision {m.get('revision') or '-'}), {m.get('family')}, {m.get('dtype')}, "
            f"attention {m.get('attn_implementation')}, pixels {m.get('min_pixels')}..{m.get('max_pixels')}"
        )
        print(
            f"run      preset {preset.get('name')} ({opts}) over {src.get('kind')} {src.get('path')}, "
            f"{r.get('total_rows')} rows, parts of {r.get('checkpoint_every')}, {r.get('save_dtype')}, "
            f"{r.get('compression')}"
        )
        stages = ", ".join(f"{k} {v}" for k, v in sorted(info["failures_by_stage"].items()))
        state = "complete" if info["complete"] else "incomplete: resume with --resume"
        print(
            f"rows     {info['rows']} in {info['parts']}/{info['expected_parts']} parts ({state}); "
            f"{info['failures']} failures{f' ({stages})' if stages else ''}"
        )
        for name, reason in info["damaged"].items():
            print(f"damaged  {name}: {reason} (its rows are missing; extract --resume sets it aside and redoes them)")
        print("columns")
        for name, c in info["columns"].items():
            print(f"  {name:40s} {c['kind']:6s} {_shape(c['shape'], c['kind'] == 'ragged'):16s} {c['dtype']}")
        print(f"samples  {', '.join(store.sample_columns)}")
        if len(store):
            row = store.samples(0, 1)
            shown = {k: row[k][0] for k in ("sample_id", "question", "gt_answer", "generated_answer") if k in row}
            print("row 0    " + "  ".join(f"{k}={v!r}" for k, v in shown.items()))
        print("packages " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()))
    return 0


def cmd_verify(args) -> int:
    """Read every part to the end; status 1 if any is damaged (like fsck: a finding, not a usage error)."""
    from ..store import open as open_store
    from ..store.verify import verify

    with open_store(args.path) as store:  # refuses a folder that is not a store
        expected = store.expected_parts
    results = verify(args.path)
    for name, reason in results.items():
        print(f"{name}  {'ok' if reason is None else 'damaged: ' + reason}")
    bad = sum(r is not None for r in results.values())
    print(f"{len(results)} parts checked, {bad} damaged, {len(results) - bad}/{expected} parts sound")
    return 1 if bad else 0


def cmd_export(args) -> int:
    from ..store import open as open_store
    from ..store.export import export

    src = Path(args.path)
    out = args.out or (f"{src.resolve()}-npy" if args.format == "npy" else f"{src.resolve()}.parquet")
    with open_store(src) as store:
        path = export(store, args.format, out)
        print(f"wrote {len(store)} rows to {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("store", help="inspect or export a feature store written by `vlmscope extract`")
    cmds = p.add_subparsers(dest="store_command", required=True)
    info = cmds.add_parser("info", help="model, run, rows, failures and columns of a store")
    info.add_argument("path", help="store directory (the --out of `vlmscope extract`)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=cmd_info)
    ver = cmds.add_parser("verify", help="read every part of a store to the end and name the damaged ones")
    ver.add_argument("path", help="store directory (the --out of `vlmscope extract`)")
    ver.set_defaults(func=cmd_verify)
    exp = cmds.add_parser("export", help="write the store as per-sample .npy files + manifest.json, or Parquet")
    exp.add_argument("path", help="store directory (the --out of `vlmscope extract`)")
    exp.add_argument(
        "--format", required=True, choices=["npy", "parquet"], help="npy: <row>/<column>.npy files; parquet: one file"
    )
    exp.add_argument("--out", default=None, help="default: PATH-npy/ or PATH.parquet beside the store")
    exp.set_defaults(func=cmd_export)
