"""Labels for probes: whether the generated answer is wrong, or any column of the sample table.

Answers are compared after `normalize_answer`:

1. lower-case;
2. punctuation becomes a space (``"left."`` = ``"left"``, ``"t-shirt"`` = ``"t shirt"``);
3. the articles ``a``, ``an``, ``the`` are dropped;
4. number words ``zero`` .. ``twenty`` become digits (``"two"`` = ``"2"``);
5. yes/no synonyms become ``yes`` / ``no`` (yeah, yep, true, correct / nope, false, incorrect);
6. whitespace is collapsed.

Two answers agree when the normalised strings are equal; when the reference is ``yes`` or ``no``
only the first word of the generated answer counts (``"Yes, there is."`` answers ``"yes"``).
The positive class of the ``correct`` label is *wrong*: probe scores are risks of a wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import VlmscopeError

_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
NUMBER_WORDS = {w: str(i) for i, w in enumerate(_NUMBERS)}
YES_WORDS = frozenset({"yes", "yeah", "yep", "true", "correct"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect"})
ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(text: str) -> str:
    """The comparison form of an answer (rules in the module docstring)."""
    words = re.sub(r"[^\w\s]|_", " ", str(text).lower()).split()
    out = []
    for w in words:
        if w in ARTICLES:
            continue
        w = NUMBER_WORDS.get(w, w)
        out.append("yes" if w in YES_WORDS else "no" if w in NO_WORDS else w)
    return " ".join(out)


def answers_match(generated: str, reference: str) -> bool:
    """Whether `generated` gives the `reference` answer after normalisation."""
    gen, ref = normalize_answer(generated), normalize_answer(reference)
    if ref in ("yes", "no"):
        return gen.split(" ", 1)[0] == ref
    return gen == ref


@dataclass
class Labels:
    """Binary labels of the store's rows. ``y[i]`` is 1 for the positive class, -1 where row i
    has no label (left out of every probe and counted in ``n_missing``)."""

    name: str
    y: np.ndarray  # [N] int8: 1, 0, or -1 for no label
    positive: str  # what y == 1 means
    negative: str

    @property
    def keep(self) -> np.ndarray:
        return self.y >= 0

    @property
    def n_missing(self) -> int:
        return int((self.y < 0).sum())

    def counts(self) -> dict[str, int]:
        return {self.positive: int((self.y == 1).sum()), self.negative: int((self.y == 0).sum())}


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind in "iub":
        return np.zeros(len(values), bool)
    return np.array([str(v).strip().lower() in ("", "nan", "none", "null") for v in values])


def correctness(samples: dict[str, np.ndarray], where: str = "the store") -> Labels:
    """1 where the generated answer is wrong, 0 where it is right; no label without a reference."""
    for col, hint in (
        ("generated_answer", "extract with --preset halp (or --generate) to store the model's answers"),
        ("gt_answer", "the source needs an answer column"),
    ):
        if col not in samples:
            raise VlmscopeError(
                f"{where} has no {col!r} column, so the label 'correct' cannot be computed: {hint}; "
                f"or pass --label COLUMN (sample columns: {', '.join(samples)})"
            )
    gen, ref = samples["generated_answer"], samples["gt_answer"]
    missing = _missing(ref)
    y = np.array([-1 if m else int(not answers_match(g, r)) for g, r, m in zip(gen, ref, missing)], np.int8)
    return Labels("correct", y, positive="wrong", negative="right")


def from_column(samples: dict[str, np.ndarray], column: str, where: str = "the store") -> Labels:
    """A sample column with exactly two values (empty cells have no label). For 0/1 or booleans
    the positive class is 1/True; otherwise the value later in sort order."""
    if column not in samples:
        raise VlmscopeError(f"no sample column {column!r} in {where}; label columns: correct, {', '.join(samples)}")
    values = samples[column]
    missing = _missing(values)
    keys = np.array([str(v).strip() for v in values])
    classes = sorted(set(keys[~missing]))
    if len(classes) > 2:
        shown = ", ".join(repr(str(c)) for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
        raise VlmscopeError(f"label column {column!r} has {len(classes)} values ({shown}); a probe needs two")
    if values.dtype.kind == "b":
        classes = ["False", "True"]
    elif values.dtype.kind in "iu" and set(classes) <= {"0", "1"}:
        classes = ["0", "1"]
    elif values.dtype.kind == "f" and set(classes) <= {"0.0", "1.0"}:
        classes = ["0.0", "1.0"]
    if len(classes) < 2:  # one class (or none): check_trainable names the problem
        classes = ["(other)", *classes] if classes else ["(none)", "(none)"]
    negative, positive = classes
    y = np.where(missing, -1, (keys == positive).astype(np.int8)).astype(np.int8)
    return Labels(column, y, positive=positive, negative=negative)


def make_labels(samples: dict[str, np.ndarray], label: str = "correct", where: str = "the store") -> Labels:
    """``correct`` (the generated answer is wrong: 1) or a sample column with two values."""
    return correctness(samples, where) if label == "correct" else from_column(samples, label, where)


def check_trainable(labels: Labels, folds: int) -> None:
    """Both classes, and at least `folds` rows of each, or a clear error."""
    counts = labels.counts()
    total = sum(counts.values())
    if total == 0:
        raise VlmscopeError(f"label {labels.name!r}: no row has a label ({labels.n_missing} rows without one)")
    for cls, n in counts.items():
        if n == 0:
            other = next(c for c in counts if c != cls)
            raise VlmscopeError(
                f"label {labels.name!r} has one class only: all {total} labelled rows are "
                f"{other!r}, none {cls!r}; a probe needs both classes"
            )
        if n < folds:
            raise VlmscopeError(
                f"label {labels.name!r}: only {n} rows are {cls!r}, fewer than --folds {folds}; "
                "lower --folds or label more rows"
            )
