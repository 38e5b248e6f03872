"""The result of a lens: for every vision token and layer, its top-k readouts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from ...errors import VlmscopeError


@dataclass
class Entry:
    """One readout: the token text and id, its score (probability for the logit lens, cosine
    otherwise) and, for the contextual lens, the caption it came from and its position in it."""

    text: str
    score: float
    caption: str | None = None
    position: int | None = None
    caption_id: int | None = None
    token_id: int | None = None


@dataclass
class Lens:
    """``entries[layer][token]`` is the top-k list of vision token `token` (sequence order over all
    images; raster order within one) at decoder layer `layer` (``llm.layers.{layer}``)."""

    kind: str
    layers: list[int]
    entries: dict[int, list[list[Entry]]]
    prompt: str = ""
    model: str = ""
    grids: list[tuple[int, int, int]] = field(default_factory=list)  # merged (t, h, w) per image
    boxes: list[list[list[float]]] = field(default_factory=list)  # [Nv, 4] pixel boxes per image
    image: Image.Image | None = None  # the first image, for the page
    index: str | None = None  # the index directory of a contextual lens

    @property
    def num_tokens(self) -> int:
        return len(next(iter(self.entries.values()))) if self.entries else 0

    def top(self, token: int, layer: int) -> list[Entry]:
        """The top-k entries of vision token `token` at `layer`."""
        if layer not in self.entries:
            raise VlmscopeError(f"layer {layer} is not in this lens: it has layers {self.layers}")
        if not 0 <= token < self.num_tokens:
            raise VlmscopeError(f"vision token {token} out of range: this lens has tokens 0..{self.num_tokens - 1}")
        return self.entries[layer][token]

    def top_words(self, layer: int) -> list[str]:
        """The best entry's text for every vision token at `layer`."""
        return [e[0].text if e else "" for e in self.entries[layer]]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "prompt": self.prompt,
            "index": self.index,
            "layers": self.layers,
            "grids": [list(g) for g in self.grids],
            "boxes": self.boxes,
            "entries": {
                str(layer): [[_compact(e) for e in tok] for tok in toks] for layer, toks in self.entries.items()
            },
        }

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``lens.json`` and ``lens.html`` (one self-contained page) into `out_dir`."""
        from ...viz.lens_page import render_page

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "lens.json", "html": out / "lens.html"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1))
        paths["html"].write_text(render_page(self))
        return paths


def _compact(e: Entry) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(e).items() if v is not None}
