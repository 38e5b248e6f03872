"""Which store columns a probe is trained on: the feature SPEC.

A SPEC is a comma-separated list of items (commas inside brackets belong to the item):

- ``vf``, ``vt``, ``qt``: every column of that HALP group (``vt/llm.layers.{i}`` for each stored i);
- ``vt[LAYERS]``, ``qt[LAYERS]``: those layers only, in the layer-spec language (``vt[0,2]``,
  ``qt[-1]``, ``vt[n/2]``, ``qt[halp]``; ``-1`` and ``n/2`` count the model's layers);
- a column name (``mean/vision.merger``) or a glob (``mean/*``).

Every selected column must hold one fixed-size array per row (flattened into a vector); a ragged
column (one [n_i, ...] array per row, e.g. all vision tokens) is refused: pool it at extraction
time (``--reduce mean``). The default SPEC is ``vf,vt,qt`` when the store has them.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import numpy as np

from ..errors import VlmscopeError
from ..specs import parse_layers

GROUPS = ("vf", "vt", "qt")
DEFAULT_SPEC = "vf,vt,qt"
_LAYER = re.compile(r"llm\.layers\.(\d+)$")


@dataclass(frozen=True)
class Feature:
    """One store column a probe is trained on; `group` is vf / vt / qt or "" for other columns."""

    column: str
    group: str
    layer: int | None
    dim: int

    def to_dict(self) -> dict:
        return {"column": self.column, "group": self.group, "layer": self.layer, "dim": self.dim}


def _split(spec: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    items.append(cur.strip())
    return [i for i in items if i]


def feature_of(store, name: str) -> Feature:
    """The `Feature` of a fixed-size column; a ragged or non-numeric column is an error."""
    col = store[name]
    if col.ragged:
        raise VlmscopeError(
            f"feature {name!r} is ragged (one [n_i, {', '.join(map(str, col.shape))}] array per row); "
            "probes need one fixed-size vector per row: pick a pooled column, or extract with "
            "--reduce mean / the halp preset"
        )
    if col.dtype.kind not in "fiub":
        raise VlmscopeError(f"feature {name!r} holds {col.dtype}, not numbers")
    group = name.split("/", 1)[0] if name.split("/", 1)[0] in GROUPS and "/" in name else ""
    m = _LAYER.search(name)
    return Feature(name, group, int(m.group(1)) if m else None, int(np.prod(col.shape, dtype=np.int64)))


def _group_columns(store, group: str) -> dict[int | None, str]:
    out = {}
    for name in store.columns:
        if name.startswith(group + "/"):
            m = _LAYER.search(name)
            out[int(m.group(1)) if m else None] = name
    return out


def _layers_item(store, group: str, layer_spec: str) -> list[str]:
    cols = _group_columns(store, group)
    stored = sorted(k for k in cols if k is not None)
    if not stored:
        raise VlmscopeError(f"{group}[{layer_spec}]: the store has no {group}/llm.layers.* columns")
    n = int(store.meta.get("model", {}).get("layers") or stored[-1] + 1)
    wanted = parse_layers(layer_spec, n)
    absent = [i for i in wanted if i not in cols]
    if absent:
        raise VlmscopeError(
            f"{group}[{layer_spec}]: layer(s) {', '.join(map(str, absent))} not stored; "
            f"stored {group} layers: {', '.join(map(str, stored))}"
        )
    return [cols[i] for i in wanted]


def parse_features(store, spec: str | None = None) -> list[Feature]:
    """The columns a SPEC selects, in the order given (duplicates dropped); see the module doc."""
    if spec is None:
        present = [g for g in GROUPS if _group_columns(store, g)]
        if not present:
            fixed = [n for n, c in store.columns.items() if not c.ragged]
            raise VlmscopeError(
                f"the store has no vf/vt/qt columns (extract with --preset halp); name columns with "
                f"--features, e.g. {', '.join(fixed[:4]) or 'none are fixed-size'}"
            )
        spec = ",".join(present)
    names: list[str] = []
    for item in _split(spec):
        m = re.fullmatch(r"(vf|vt|qt)\[(.+)\]", item)
        if m:
            found = _layers_item(store, m.group(1), m.group(2))
        elif item in GROUPS:
            cols = _group_columns(store, item)
            found = [cols[k] for k in sorted(cols, key=lambda k: -1 if k is None else k)]
            if not found:
                raise VlmscopeError(
                    f"feature group {item!r}: the store has no {item}/ columns; columns: {', '.join(store.columns)}"
                )
        elif any(ch in item for ch in "*?["):
            found = [n for n in store.columns if fnmatch.fnmatchcase(n, item)]
            if not found:
                raise VlmscopeError(f"feature pattern {item!r} matches no column; columns: {', '.join(store.columns)}")
        elif item in store.columns:
            found = [item]
        else:
            raise VlmscopeError(
                f"unknown feature {item!r}; use vf, vt, qt, vt[LAYERS], qt[LAYERS], a column or a "
                f"glob; columns: {', '.join(store.columns)}"
            )
        names += [n for n in found if n not in names]
    return [feature_of(store, n) for n in names]


def load_matrix(store, feature: Feature) -> np.ndarray:
    """[N, dim] float32: the column read whole, each row flattened."""
    x = np.asarray(store[feature.column].read(), dtype=np.float32)
    return x.reshape(len(x), -1)
