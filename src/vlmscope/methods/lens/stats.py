"""Layer statistics: how large vision-token states are against text-token states, layer by layer.

Vision tokens enter the LLM at a different scale from text and their norms often grow steeply
through the layers (the seed reports ~35-55 rising to ~200-240 on Qwen2-VL-7B); a plot of norm
against layer with one band per token type shows this at a glance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import VlmscopeError
from .common import layer_list

STATS = ("mean", "std", "p5", "p50", "p95", "max")


def summarize(norms: np.ndarray) -> dict[str, float]:
    """mean, std, 5/50/95th percentiles and max of a 1-D array of norms (NaN when empty)."""
    if norms.size == 0:
        return {k: float("nan") for k in STATS}
    p5, p50, p95 = np.percentile(norms, [5, 50, 95])
    return {
        "mean": float(norms.mean()),
        "std": float(norms.std()),
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
        "max": float(norms.max()),
    }


@dataclass
class LayerStats:
    """``stats[kind][layer]`` -> summary of L2 norms; kind is ``vision`` or ``text``."""

    layers: list[int]
    stats: dict[str, dict[int, dict[str, float]]]
    counts: dict[str, int] = field(default_factory=dict)  # tokens per kind (per layer)
    images: int = 0
    source: str = ""
    model: str = ""

    def series(self, kind: str, stat: str) -> np.ndarray:
        return np.array([self.stats[kind][i][stat] for i in self.layers])

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "source": self.source,
            "images": self.images,
            "counts": self.counts,
            "layers": self.layers,
            "stats": {k: {str(i): v for i, v in per.items()} for k, per in self.stats.items()},
        }

    def save(self, out_dir: str | Path, formats: Sequence[str] = ("json", "png", "pdf")) -> dict[str, Path]:
        """``layer_stats.json`` and the plot as ``layer_stats.png`` / ``.pdf``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        if "json" in formats:
            paths["json"] = out / "layer_stats.json"
            paths["json"].write_text(json.dumps(self.to_dict(), indent=1))
        figs = [f for f in formats if f in ("png", "pdf")]
        if figs:
            fig = self.plot()
            for f in figs:
                paths[f] = out / f"layer_stats.{f}"
                fig.savefig(paths[f], dpi=150, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
        return paths

    def plot(self):
        """Median norm per layer with a 5-95% band and the mean, one colour per token type."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4.2))
        x = np.array(self.layers)
        colours = {"vision": "#1f6fd1", "text": "#e07b00"}
        for kind in ("vision", "text"):
            if kind not in self.stats or not self.counts.get(kind):
                continue
            c = colours[kind]
            p50 = self.series(kind, "p50")
            if not np.all(np.isnan(self.series(kind, "p5"))):
                ax.fill_between(
                    x, self.series(kind, "p5"), self.series(kind, "p95"), color=c, alpha=0.18, label=f"{kind} 5-95%"
                )
                ax.plot(x, p50, "-o", color=c, ms=4, label=f"{kind} median ({self.counts[kind]} tokens/layer)")
            ax.plot(x, self.series(kind, "mean"), "--", color=c, lw=1, label=f"{kind} mean")
            ax.plot(x, self.series(kind, "max"), ":", color=c, lw=1, label=f"{kind} max")
        v = self.series("vision", "p50") if self.counts.get("vision") else None
        if v is not None and not np.isnan(v).all():
            ax.set_title(
                f"L2 norm by layer: vision median {v[0]:.3g} at layer {x[0]} -> {v[-1]:.3g} at layer {x[-1]}",
                fontsize=10,
            )
        ax.set_xlabel("decoder layer (llm.layers.i)")
        ax.set_ylabel("L2 norm of the residual stream")
        ax.set_xticks(x if len(x) <= 32 else x[:: max(1, len(x) // 16)])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        src = f"{self.images} image{'s' if self.images != 1 else ''}" + (f", {self.source}" if self.source else "")
        ax.text(1.0, -0.16, src, transform=ax.transAxes, ha="right", fontsize=7, color="#666")
        return fig


def stats_from_examples(scope, examples, layers="all", batch_size: int = 8) -> LayerStats:
    """Norms of every vision and prompt-text token of `examples` (one Example or a list)."""
    from ...inputs import Example

    examples = [examples] if isinstance(examples, Example) else list(examples)
    layers = layer_list(scope, layers)
    norms: dict[str, dict[int, list[np.ndarray]]] = {k: {i: [] for i in layers} for k in ("vision", "text")}
    images = 0
    for a in range(0, len(examples), batch_size):
        trace = scope.forward(examples[a : a + batch_size], "llm.layers", layers=layers, tokens="all")
        for b, tm in enumerate(trace.token_maps):
            pos = trace.positions[f"llm.layers.{layers[0]}"][b]
            where = {p: j for j, p in enumerate(pos)}
            images += len(tm.visuals)
            sel = {"vision": [where[p] for p in tm.vision_positions()], "text": [where[p] for p in tm.text_positions()]}
            for i in layers:
                n = trace[f"llm.layers.{i}"][b].float().norm(dim=-1).numpy()
                for kind, idx in sel.items():
                    norms[kind][i].append(n[idx])
    return _finish(norms, layers, images, "", str(scope.source))


def stats_from_store(path: str | Path, layers="all") -> LayerStats:
    """Norms of the vision tokens in a `layers`-preset extraction store (it keeps no text tokens),
    read one row at a time."""
    from ...store import open as open_store

    with open_store(path) as store:
        names = [c for c in store.columns if c.startswith("llm.layers.") and c[11:].isdigit()]
        if not names:
            raise VlmscopeError(
                f"store {path} has no llm.layers.{{i}} vision-token columns: extract it with --preset layers"
            )
        have = sorted(int(c[11:]) for c in names)
        layers = have if layers in (None, "all") else layer_list_in(layers, have, path)
        norms: dict[str, dict[int, list[np.ndarray]]] = {
            "vision": {i: [] for i in layers},
            "text": {i: [] for i in layers},
        }
        images = 0
        for row in range(len(store)):
            for i in layers:
                norms["vision"][i].append(
                    np.linalg.norm(np.asarray(store[f"llm.layers.{i}"][row], np.float32), axis=-1)
                )
            images += 1
        model = store.info()["model"].get("source", "")
    return _finish(norms, layers, images, str(path), str(model))


def layer_list_in(spec, have: list[int], where) -> list[int]:
    from ...specs import parse_layers

    wanted = parse_layers(spec, max(have) + 1)
    missing = [i for i in wanted if i not in have]
    if missing:
        raise VlmscopeError(f"layers {missing} are not in the store {where}: it holds layers {have}")
    return wanted


def _finish(norms, layers, images, source, model) -> LayerStats:
    stats, counts = {}, {}
    for kind, per in norms.items():
        arrays = {i: np.concatenate(v) if v else np.zeros(0) for i, v in per.items()}
        stats[kind] = {i: summarize(a) for i, a in arrays.items()}
        counts[kind] = int(arrays[layers[0]].size) if layers else 0
    return LayerStats(layers, stats, counts, images, source, model)
