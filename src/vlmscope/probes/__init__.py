"""Hallucination probes (HALP): predict from stored features whether the model's answer is wrong.

    import vlmscope.probes
    result = vlmscope.probes.train("features/", label="correct", probe="logreg")
    print(result.table()); result.plot("auroc_by_layer"); result.save("probes/")
    scores = vlmscope.probes.apply("probes/", "new-features/")   # per-row risk of a wrong answer

See docs/probes.md: labels and their normalisation (labels.py), the feature SPEC (features.py),
the probes (models.py), cross-validation and controls (cv.py), results (result.py), saved probes
(apply.py). Needs scikit-learn (the ``probes`` extra).
"""

from __future__ import annotations

from .apply import Scores, apply, load_probes
from .features import DEFAULT_SPEC, Feature, parse_features
from .labels import answers_match, normalize_answer
from .models import PROBES, make_probe
from .result import ProbeResult
from .train import train

__all__ = [
    "train",
    "apply",
    "load_probes",
    "ProbeResult",
    "Scores",
    "Feature",
    "parse_features",
    "make_probe",
    "normalize_answer",
    "answers_match",
    "PROBES",
    "DEFAULT_SPEC",
]
