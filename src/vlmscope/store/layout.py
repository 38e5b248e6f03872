"""The on-disk layout of a feature store: file names and what one row carries.

A store is a directory::

    run.json             what produced it: model, dtype, attention, pixels, versions, configuration
    part-000000.h5       rows [0, C) of the source, C = checkpoint_every; one file per part
    .part-000001.h5.tmp  a part being written; renamed into place only when complete
    failures.jsonl       rows that could not be extracted, written once every part is finished

Inside a part, ``/samples/<name>`` is the sample table (one scalar per row) and
``/features/<name>`` is either a dataset [n, ...] (one array of fixed shape per row) or a group
with ``values`` [sum of n_i, ...] and ``offsets`` [n + 1] (row i is ``values[offsets[i]:offsets[i+1]]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "vlmscope.store"
VERSION = 1
RUN_FILE = "run.json"
FAILURES_FILE = "failures.jsonl"
_PART = re.compile(r"part-(\d{6})\.h5")


def part_path(out: Path, part: int) -> Path:
    return out / f"part-{part:06d}.h5"


def temp_path(out: Path, part: int) -> Path:
    return out / f".part-{part:06d}.h5.tmp"


def finished_parts(out: Path) -> dict[int, Path]:
    """Part number -> file, for every complete part in `out` (temporary files are not parts)."""
    found = {}
    for p in Path(out).iterdir() if Path(out).is_dir() else []:
        m = _PART.fullmatch(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


@dataclass
class Record:
    """One extracted row. ``fields`` go to the sample table; ``arrays`` have the same shape in
    every row; ``ragged`` arrays vary along their first axis (tokens, images)."""

    index: int
    sample_id: str
    fields: dict[str, str | int | float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ragged: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Failure:
    """A row that produced nothing, and why. ``stage``: source, image, or model."""

    index: int
    sample_id: str
    stage: str
    reason: str

    def to_dict(self) -> dict:
        return {"index": self.index, "sample_id": self.sample_id, "stage": self.stage, "reason": self.reason}
