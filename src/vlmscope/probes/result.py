"""`ProbeResult`: per-feature cross-validated scores with their controls and baselines; a table,
a plot of AUROC against layer, and files (JSON, CSV, PNG, PDF, the fitted probes)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

CSV_FIELDS = [
    "feature",
    "group",
    "layer",
    "dim",
    "auroc_mean",
    "auroc_std",
    "ap_mean",
    "ap_std",
    "accuracy_mean",
    "accuracy_std",
    "control_auroc_mean",
    "control_auroc_std",
    "control_ap_mean",
    "control_ap_std",
]
_NAMES = {"vf": "VF (mean of last vision block)", "vt": "VT (last image token)", "qt": "QT (query token)"}


@dataclass
class ProbeResult:
    """What `vlmscope.probes.train` returns. ``rows`` holds one summary per feature (see
    `cv.FeatureScores.summary`); ``probes`` the probes refitted on every labelled row."""

    store: str
    model: dict
    label: dict  # name, positive, negative, counts, missing
    probe: str
    folds: int
    seed: int
    rows: list[dict]
    prior: dict | None = None  # AUROC of the question-text prior (cv.prior_baseline)
    probes: dict = field(default_factory=dict, repr=False)
    features: list = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        return sum(self.label["counts"].values())

    @property
    def baseline(self) -> dict:
        """The majority-class predictor: AUROC 0.5, AP = positive rate, accuracy = majority share."""
        pos = self.label["counts"][self.label["positive"]] / self.n
        return {
            "majority_class": self.label["positive"] if pos > 0.5 else self.label["negative"],
            "accuracy": max(pos, 1 - pos),
            "auroc": 0.5,
            "ap": pos,
            "positive_rate": pos,
        }

    def best(self) -> dict:
        """The feature with the highest mean AUROC."""
        return max(self.rows, key=lambda r: r["auroc_mean"])

    def to_dict(self) -> dict:
        return {
            "store": self.store,
            "model": self.model,
            "label": self.label,
            "probe": self.probe,
            "folds": self.folds,
            "seed": self.seed,
            "n": self.n,
            "baseline": self.baseline,
            "question_prior": self.prior,
            "rows": self.rows,
        }

    def table(self) -> str:
        """A Markdown table, mean ± standard deviation over folds, with n, balance and baseline."""
        lab, b = self.label, self.baseline
        counts = ", ".join(f"{k} {v} ({v / self.n:.0%})" for k, v in lab["counts"].items())
        lines = [
            f"probe {self.probe}, label {lab['name']} (positive: {lab['positive']}), n = {self.n} ({counts}), "
            f"{lab['missing']} rows without a label left out; {self.folds}-fold CV, seed {self.seed}",
            f"majority baseline: accuracy {b['accuracy']:.3f}, AUROC 0.500, AP {b['ap']:.3f}"
            + (
                f"; question-text prior: AUROC {self.prior['auroc_mean']:.3f} ± {self.prior['auroc_std']:.3f}"
                if self.prior
                else ""
            ),
            "",
            "| feature | AUROC | AP | accuracy | control AUROC | control AP |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            cells = [
                f"{r[m + '_mean']:.3f} ± {r[m + '_std']:.3f}"
                for m in ("auroc", "ap", "accuracy", "control_auroc", "control_ap")
            ]
            lines.append(f"| {r['feature']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None):
        """AUROC against layer for VT and QT (VF as a flat band), the shuffled-label control in a
        panel beside it; saved as PNG and PDF when `path` (a stem or .png/.pdf name) is given."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        panels = ((axes[0], "", f"{self.probe} probe"), (axes[1], "control_", "control: shuffled labels"))
        for ax, prefix, title in panels:
            layers = sorted({r["layer"] for r in self.rows if r["layer"] is not None})
            for group, style in (("vt", "o-"), ("qt", "s-")):
                rows = sorted(
                    (r for r in self.rows if r["group"] == group and r["layer"] is not None), key=lambda r: r["layer"]
                )
                if rows:
                    ax.errorbar(
                        [r["layer"] for r in rows],
                        [r[prefix + "auroc_mean"] for r in rows],
                        yerr=[r[prefix + "auroc_std"] for r in rows],
                        fmt=style,
                        capsize=3,
                        label=_NAMES[group],
                    )
            for r in self.rows:
                if r["group"] == "vf" and layers:
                    m, s = r[prefix + "auroc_mean"], r[prefix + "auroc_std"]
                    ax.axhline(m, color="tab:green", ls="--", label=_NAMES["vf"])
                    ax.axhspan(m - s, m + s, color="tab:green", alpha=0.12)
            ax.axhline(0.5, color="grey", ls=":", label="majority / chance (0.5)")
            if self.prior and not prefix:
                ax.axhline(self.prior["auroc_mean"], color="tab:purple", ls="-.", label="question-text prior")
            ax.set_xlabel("decoder layer i of llm.layers.{i}")
            ax.set_title(title)
            if layers:
                ax.set_xticks(layers)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"AUROC (mean ± sd over {self.folds} folds)")
        axes[0].legend(fontsize=8, loc="lower right")
        fig.suptitle(
            f"label {self.label['name']} (positive: {self.label['positive']}), n = {self.n}, "
            f"positive rate {self.baseline['positive_rate']:.2f}",
            fontsize=10,
        )
        fig.tight_layout()
        if path is not None:
            stem = Path(path)
            stem = stem.with_suffix("") if stem.suffix in (".png", ".pdf") else stem
            stem.parent.mkdir(parents=True, exist_ok=True)
            for ext in (".png", ".pdf"):
                fig.savefig(stem.with_suffix(ext), dpi=120)
            plt.close(fig)
        return fig

    def save(self, out_dir: str | Path) -> Path:
        """result.json, result.csv, auroc_by_layer.png/.pdf and, if fitted, probe.safetensors +
        probe.json (what `vlmscope probe apply` reads)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(self.to_dict(), indent=2))
        with (out / "result.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        self.plot(out / "auroc_by_layer")
        if self.probes:
            from .apply import save_probes

            save_probes(self, out)
        return out
