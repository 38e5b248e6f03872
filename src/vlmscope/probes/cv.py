"""Cross-validation of one probe on one feature, with its shuffled-label control.

Stratified k-fold with a fixed seed (the same folds for every feature); each fold fits a fresh
probe, standardisation included, on its training rows only. The control task is the same
procedure on labels permuted once with the seed (class balance kept, link to the features
broken): a probe that scores well above 0.5 AUROC on it is fitting noise or leaking folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import Feature
from .models import make_probe


def folds_of(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row indices of stratified k-fold, shuffled with `seed`."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(skf.split(np.zeros(len(y)), y))


def shuffled(y: np.ndarray, seed: int) -> np.ndarray:
    """The control labels: `y` permuted by a generator seeded with `seed`."""
    return np.random.default_rng([seed, 1]).permutation(y)


def fold_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """AUROC, average precision (positive class 1) and accuracy at 0.5 of one fold's scores."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auroc": float(roc_auc_score(y, score)),
        "ap": float(average_precision_score(y, score)),
        "accuracy": float(np.mean((score >= 0.5) == (y == 1))),
    }


def cross_validate(X: np.ndarray, y: np.ndarray, kind: str, folds: int, seed: int) -> list[dict[str, float]]:
    """Per-fold metrics of probe `kind` on features X [n, d] and labels y [n] in {0, 1}."""
    out = []
    for k, (tr, te) in enumerate(folds_of(y, folds, seed)):
        probe = make_probe(kind, seed=seed + k).fit(X[tr], y[tr])
        out.append(fold_metrics(y[te], probe.score(X[te])))
    return out


def _mean_std(v) -> tuple[float, float]:
    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


@dataclass
class FeatureScores:
    """Fold metrics of one feature, for the real labels and the control."""

    feature: Feature
    folds: list[dict[str, float]] = field(default_factory=list)
    control: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict:
        """Mean and standard deviation over folds of every metric, real and control."""
        out: dict = dict(self.feature.to_dict())
        out["feature"] = out.pop("column")
        for prefix, rows in (("", self.folds), ("control_", self.control)):
            for m in ("auroc", "ap", "accuracy"):
                v = np.array([r[m] for r in rows])
                out[f"{prefix}{m}_mean"], out[f"{prefix}{m}_std"] = _mean_std(v)
        out["fold_auroc"] = [r["auroc"] for r in self.folds]
        out["control_fold_auroc"] = [r["auroc"] for r in self.control]
        return out


def evaluate_feature(
    feature: Feature, X: np.ndarray, y: np.ndarray, kind: str, folds: int, seed: int, control: bool = True
) -> FeatureScores:
    """Cross-validated metrics of one feature, and of its shuffled-label control."""
    scores = FeatureScores(feature, cross_validate(X, y, kind, folds, seed))
    if control:
        scores.control = cross_validate(X, shuffled(y, seed), kind, folds, seed)
    return scores


def prior_baseline(keys: np.ndarray, y: np.ndarray, folds: int, seed: int) -> list[float]:
    """Per-fold AUROC of a predictor that sees only the question: the positive rate of the same
    question text in the training folds (one pseudo-count of the overall rate; unseen: the rate).
    A probe must beat this to show that it reads more than which question was asked."""
    from sklearn.metrics import roc_auc_score

    out = []
    for tr, te in folds_of(y, folds, seed):
        rate = float(y[tr].mean())
        pos: dict = {}
        cnt: dict = {}
        for k, v in zip(keys[tr], y[tr]):
            pos[k] = pos.get(k, 0) + int(v)
            cnt[k] = cnt.get(k, 0) + 1
        score = np.array([(pos[k] + rate) / (cnt[k] + 1) if k in cnt else rate for k in keys[te]])
        out.append(float(roc_auc_score(y[te], score)))
    return out
