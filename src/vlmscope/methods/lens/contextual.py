"""Contextual lens (LatentLens, McGill-NLP/latentlens): a vision token's state at layer i compared
by cosine with the states the same LLM gives to caption tokens at layer i. A neighbour is a
word in context ("red" in "a red circle"), which reads states that no single vocabulary row does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import VlmscopeError
from . import ann
from .index import MANIFEST, _check_same, finished_parts, model_identity
from .result import Entry


class ContextIndex:
    """A finished index directory, opened for search. Vectors and token tables stay on disk
    (memory-mapped); only the FAISS index of a searched layer is loaded."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            raise VlmscopeError(
                f"{self.path} is not a lens index (no {MANIFEST}); build one with `vlmscope lens index`"
            )
        self.manifest = json.loads((self.path / MANIFEST).read_text())
        if not self.manifest.get("complete"):
            raise VlmscopeError(
                f"{self.path} is an incomplete lens index: finish it with `vlmscope lens index "
                f"... --out {self.path} --resume`"
            )
        self.layers: list[int] = self.manifest["layers"]
        dirs = list(finished_parts(self.path / "parts").values())
        self._cols = {
            name: [np.load(d / f"{name}.npy", mmap_mode="r") for d in dirs]
            for name in ("caption_id", "position", "token_text")
        }
        self._starts = np.cumsum([0] + [len(c) for c in self._cols["position"]])
        self._offsets = np.load(self.path / "captions.offsets.npy", mmap_mode="r")
        self._faiss: dict[int, Any] = {}  # faiss indexes (faiss ships no type information)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def check(self, scope, layers: list[int]) -> None:
        """Refuse another model, or layers this index does not hold."""
        _check_same(self.manifest, model_identity(scope), None, self.path)
        missing = [i for i in layers if i not in self.layers]
        if missing:
            raise VlmscopeError(f"layers {missing} are not in the index {self.path}: it holds layers {self.layers}")

    def search(self, layer: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosines [n, k], token ids [n, k]) of the nearest caption tokens at `layer`."""
        if layer not in self._faiss:
            self._faiss[layer] = ann.faiss_module().read_index(str(self.path / f"index-layer-{layer}.faiss"))
            info = self.manifest.get("indexes", {}).get(str(layer), {})
            if "nprobe" in info:
                self._faiss[layer].nprobe = info["nprobe"]
        return self._faiss[layer].search(ann.normalize(vectors), k)

    def token(self, i: int) -> tuple[str, int, int]:
        """(token text, caption id, position in the caption) of stored token `i`."""
        part = int(np.searchsorted(self._starts, i, side="right")) - 1
        j = i - self._starts[part]
        return (
            str(self._cols["token_text"][part][j]),
            int(self._cols["caption_id"][part][j]),
            int(self._cols["position"][part][j]),
        )

    def caption(self, cid: int) -> str:
        a, b = int(self._offsets[cid]), int(self._offsets[cid + 1])
        with open(self.path / "captions.txt", "rb") as f:
            f.seek(a)
            return f.read(b - a).decode("utf-8").rstrip("\n")


def contextual_entries(index: ContextIndex, states: dict[int, torch.Tensor], k: int) -> dict[int, list[list[Entry]]]:
    """{layer: per vision token, its k nearest caption tokens as Entries}."""
    out = {}
    for layer, h in states.items():
        scores, ids = index.search(layer, h.numpy(), k)
        rows = []
        for s_row, i_row in zip(scores, ids):
            row = []
            for s, i in zip(s_row, i_row):
                if i < 0:
                    continue
                text, cid, pos = index.token(int(i))
                row.append(Entry(text, float(s), index.caption(cid), pos, cid))  # token_id: see the part's token_id.npy
            rows.append(row)
        out[layer] = rows
    return out
