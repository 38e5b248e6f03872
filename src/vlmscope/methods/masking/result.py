"""MaskingResult: the impact of every masked unit on every answer token, and its files."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import VlmscopeError
from ...tokenmap import TokenMap
from .units import Unit

METRICS = ("drop", "kl")


@dataclass
class MaskingResult:
    """``delta_logprob[u, j]``: log p(answer token j) with unit u masked minus the clean value
    (teacher-forced). Everything shown or saved (CLI, result.json, impacts.csv, pictures) uses
    its opposite, the drop ``impact("drop")`` = clean - masked: positive when the unit supports
    the answer token, negative when masking it helps. ``kl[u, j]``: KL(clean || masked) of the
    distribution that predicts token j.
    ``first_change[u]``: the first answer token where the masked model's greedy choice differs
    (None: the greedy answer is unchanged); ``regenerated[u]``: the greedy answer under the
    masking, when asked for."""

    settings: dict
    prompt: str
    answer_ids: list[int]
    answer_tokens: list[str]
    answer_text: str
    clean_logprobs: np.ndarray  # [n]
    units: list[Unit]
    delta_logprob: np.ndarray  # [U, n]
    kl: np.ndarray  # [U, n]
    first_change: list[int | None]
    token_map: TokenMap
    regenerated: list[str] | None = None
    images: list = field(default_factory=list, repr=False)  # PIL images, for the heatmaps
    seconds: float = 0.0

    @property
    def total_delta_logprob(self) -> np.ndarray:
        """[U] change of the whole answer's log-probability."""
        return self.delta_logprob.sum(1)

    @property
    def total_kl(self) -> np.ndarray:
        return self.kl.sum(1)

    def impact(self, metric: str = "drop", token: int | None = None) -> np.ndarray:
        """[U] importance of each unit: ``drop`` = -delta log-prob (positive: the unit supports the
        answer), or ``kl``; for answer token `token`, or summed over the answer when None."""
        if metric not in METRICS:
            raise VlmscopeError(f"unknown impact metric {metric!r}; choose from {', '.join(METRICS)}")
        values = -self.delta_logprob if metric == "drop" else self.kl
        if token is None:
            return values.sum(1)
        n = values.shape[1]
        if not -n <= token < n:
            raise VlmscopeError(f"answer token {token} out of range: the answer has {n} tokens (0..{n - 1})")
        return values[:, token]

    def vision_map(self, image: int = 0, token: int | None = None, metric: str = "drop") -> np.ndarray:
        """[Nv] importance per vision token of `image` in raster order (TokenMap.visuals[image]);
        a token covered by several windows gets their mean."""
        visual = self.token_map.visual(image)
        values = self.impact(metric, token)
        total, count = np.zeros(visual.num_tokens), np.zeros(visual.num_tokens)
        for u, value in zip(self.units, values):
            if u.kind == "vision" and u.image == image:
                total[list(u.cells)] += value
                count[list(u.cells)] += 1
        if not count.any():
            raise VlmscopeError(f"no vision units of image {image} were masked; use --mode vision or both")
        with np.errstate(invalid="ignore"):
            return (total / count).astype(np.float32)

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        units = []
        for i, u in enumerate(self.units):
            d = u.to_dict()
            if u.kind == "vision":
                d["box"] = u.box(self.token_map.visual(u.image_index))
            d.update(
                drop=(-self.delta_logprob[i]).tolist(),
                kl=self.kl[i].tolist(),
                total_drop=float(-self.total_delta_logprob[i]),
                total_kl=float(self.total_kl[i]),
                first_change=self.first_change[i],
            )
            if self.regenerated is not None:
                d["regenerated"] = self.regenerated[i]
            units.append(d)
        return {
            "settings": self.settings,
            "prompt": self.prompt,
            "answer": {
                "text": self.answer_text,
                "ids": self.answer_ids,
                "tokens": self.answer_tokens,
                "clean_logprobs": self.clean_logprobs.tolist(),
            },
            "units": units,
            "token_map": self.token_map.summary(),
            "seconds": self.seconds,
        }

    def rows(self) -> list[dict]:
        """One row per masked unit x answer token (the CSV)."""
        out = []
        for i, u in enumerate(self.units):
            for j, tok in enumerate(self.answer_tokens):
                out.append(
                    {
                        "unit": i,
                        "kind": u.kind,
                        "label": u.label,
                        "image": "" if u.image is None else u.image,
                        "positions": " ".join(map(str, u.positions)),
                        "token_index": j,
                        "token": tok,
                        "clean_logprob": float(self.clean_logprobs[j]),
                        "masked_logprob": float(self.clean_logprobs[j] + self.delta_logprob[i, j]),
                        "drop": float(-self.delta_logprob[i, j]),
                        "kl": float(self.kl[i, j]),
                        "first_change": "" if self.first_change[i] is None else self.first_change[i],
                    }
                )
        return out

    def save(self, out: str | Path, metric: str = "drop") -> Path:
        """Write result.json, impacts.csv, heatmaps of vision units and the text-importance page."""
        from ...viz.masking import save_heatmaps, save_text_importance

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(self.to_dict(), indent=1))
        rows = self.rows()
        with (out / "impacts.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        if any(u.kind == "vision" for u in self.units):
            save_heatmaps(self, out / "heatmaps", metric)
        if any(u.kind == "text" for u in self.units):
            save_text_importance(self, out, metric)
        return out
