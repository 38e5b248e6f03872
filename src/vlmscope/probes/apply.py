"""Saved probes: `probe.safetensors` (every feature's fitted arrays) beside `probe.json` (what they
were trained on), and scoring a new store with them. safetensors, not pickle: loading a probe
runs no code from the file."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import VlmscopeError
from ..files import replacing
from .features import Feature, load_matrix
from .models import make_probe

PROBE_FILE, META_FILE = "probe.safetensors", "probe.json"
FORMAT = "vlmscope.probe"


def save_probes(result, out_dir: str | Path) -> Path:
    """Write the probes refitted on every labelled row of `result` into `out_dir`."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{col}::{k}": np.ascontiguousarray(v) for col, p in result.probes.items() for k, v in p.tensors().items()
    }
    save_file(tensors, str(out / PROBE_FILE))
    scores = {r["feature"]: r for r in result.rows}
    meta = {
        "format": FORMAT,
        "version": 1,
        "probe": result.probe,
        "label": result.label,
        "store": result.store,
        "model": result.model,
        "folds": result.folds,
        "seed": result.seed,
        "n": result.n,
        "best": result.best()["feature"],
        "features": [
            {
                **f.to_dict(),
                "cv_auroc_mean": scores[f.column]["auroc_mean"],
                "cv_auroc_std": scores[f.column]["auroc_std"],
            }
            for f in result.features
            if f.column in result.probes
        ],
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def load_probes(probe_dir: str | Path) -> tuple[dict, dict]:
    """(probe.json as a dict, {column: fitted probe}) from a directory written by `save_probes`."""
    from safetensors.numpy import load_file

    d = Path(probe_dir)
    if not (d / META_FILE).is_file() or not (d / PROBE_FILE).is_file():
        raise VlmscopeError(
            f"not a probe directory: {str(d)!r} needs {META_FILE} and {PROBE_FILE} "
            "(written by `vlmscope probe train --out DIR`)"
        )
    meta = json.loads((d / META_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise VlmscopeError(f"{str(d / META_FILE)!r} is not a vlmscope probe (format {meta.get('format')!r})")
    flat = load_file(str(d / PROBE_FILE))
    probes = {}
    for f in meta["features"]:
        t = {k.split("::", 1)[1]: v for k, v in flat.items() if k.split("::", 1)[0] == f["column"]}
        probes[f["column"]] = make_probe(meta["probe"]).load_tensors(t)
    return meta, probes


@dataclass
class Scores:
    """Per-row risk scores of a store: ``risk[column]`` is P(positive) from that feature's probe;
    ``best`` the feature with the highest cross-validated AUROC at training time."""

    index: np.ndarray
    sample_id: np.ndarray
    risk: dict[str, np.ndarray]
    best: str
    positive: str
    auroc: dict[str, float] = field(default_factory=dict)  # when the new store has the label
    warnings: list[str] = field(default_factory=list)

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = [self.best] + [c for c in self.risk if c != self.best]
        with replacing(path) as tmp, tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "sample_id", "risk", *cols])
            for i in range(len(self.index)):
                w.writerow(
                    [
                        int(self.index[i]),
                        self.sample_id[i],
                        f"{self.risk[self.best][i]:.6f}",
                        *(f"{self.risk[c][i]:.6f}" for c in cols),
                    ]
                )
        return path


def apply(probe_dir: str | Path, store) -> Scores:
    """Score every row of `store` (a path or an open store) with the probes in `probe_dir`."""
    from ..store import Store
    from ..store import open as open_store
    from .features import feature_of
    from .labels import make_labels

    meta, probes = load_probes(probe_dir)
    st = store if isinstance(store, Store) else open_store(store)
    warnings = []
    src_old, src_new = meta.get("model", {}).get("source"), st.meta.get("model", {}).get("source")
    if src_old != src_new:
        warnings.append(f"the probes were trained on features of {src_old!r}, this store holds {src_new!r}")
    risk = {}
    for f in meta["features"]:
        if f["column"] not in st.columns:
            raise VlmscopeError(
                f"the store {str(st.path)!r} has no column {f['column']!r} that the probe was "
                f"trained on; columns: {', '.join(st.columns)}"
            )
        feat: Feature = feature_of(st, f["column"])
        if feat.dim != f["dim"]:
            raise VlmscopeError(
                f"column {f['column']!r} has {feat.dim} values per row here, {f['dim']} when the "
                "probe was trained: features of another model"
            )
        risk[f["column"]] = probes[f["column"]].score(load_matrix(st, feat))
    table = st.samples()
    out = Scores(
        table.get("index", np.arange(len(st))),
        table.get("sample_id", np.arange(len(st)).astype(str)),
        risk,
        meta["best"],
        meta["label"]["positive"],
        warnings=warnings,
    )
    try:
        labels = make_labels(table, meta["label"]["name"], where=f"store {str(st.path)!r}")
    except VlmscopeError:
        labels = None
    if labels is not None and len(set(labels.y[labels.keep].tolist())) == 2 and labels.positive == out.positive:
        from sklearn.metrics import roc_auc_score

        out.auroc = {c: float(roc_auc_score(labels.y[labels.keep], r[labels.keep])) for c, r in risk.items()}
    return out
