"""`train`: labels from the store, one probe per feature under cross-validation, its control,
and a refit on every labelled row for `apply`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import VlmscopeError
from .cv import evaluate_feature
from .features import load_matrix, parse_features
from .labels import check_trainable, make_labels
from .models import PROBES, make_probe
from .result import ProbeResult


def _need_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise VlmscopeError("probes need scikit-learn: pip install 'vlmscope[probes]'") from None


def train(
    store,
    label: str = "correct",
    probe: str = "logreg",
    features: str | None = None,
    folds: int = 5,
    seed: int = 0,
    control: bool = True,
    refit: bool = True,
    progress: Callable[[dict], None] | None = None,
) -> ProbeResult:
    """Cross-validated probes of `label` on each feature of `store` (a path or an open store).

    label: ``correct`` (positive = the generated answer is wrong) or a sample column with two
    values; features: a SPEC (see `vlmscope.probes.features`), default ``vf,vt,qt``.
    `progress` is called with each feature's summary as it finishes.
    """
    from ..store import Store
    from ..store import open as open_store

    _need_sklearn()
    if probe not in PROBES:
        raise VlmscopeError(f"unknown probe {probe!r}; choose from {', '.join(PROBES)}")
    if folds < 2:
        raise VlmscopeError(f"--folds must be at least 2, got {folds}")
    st = store if isinstance(store, Store) else open_store(store)
    where = f"store {str(st.path)!r}"
    labels = make_labels(st.samples(), label, where=where)
    check_trainable(labels, folds)
    feats = parse_features(st, features)
    keep = labels.keep
    y = labels.y[keep].astype(np.int64)
    rows, probes = [], {}
    for f in feats:
        X = load_matrix(st, f)[keep]
        bad = int((~np.isfinite(X)).any(1).sum())
        if bad:
            raise VlmscopeError(f"feature {f.column!r} has {bad} labelled rows with NaN or inf values")
        row = evaluate_feature(f, X, y, probe, folds, seed, control=control).summary()
        rows.append(row)
        if refit:
            probes[f.column] = make_probe(probe, seed).fit(X, y)
        if progress is not None:
            progress(row)
    table = st.samples()
    prior = None
    if "question" in table:
        from .cv import _mean_std, prior_baseline

        m, s = _mean_std(prior_baseline(np.asarray(table["question"])[keep], y, folds, seed))
        prior = {"key": "question", "auroc_mean": m, "auroc_std": s}
    label_info = {
        "name": labels.name,
        "positive": labels.positive,
        "negative": labels.negative,
        "counts": labels.counts(),
        "missing": labels.n_missing,
    }
    return ProbeResult(
        str(Path(st.path)),
        st.meta.get("model", {}),
        label_info,
        probe,
        folds,
        seed,
        rows,
        prior=prior,
        probes=probes,
        features=feats,
    )
