"""FaithfulnessResult: per-question scores, summaries with bootstrap intervals, paired
comparisons, and the three outputs (JSON, a Markdown table, a PNG plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...files import write_text
from ...stats import Estimate, bootstrap, paired_difference

METRICS = ("pointing", "deletion", "insertion")


def _est(values) -> dict:
    return bootstrap(values).to_dict()


@dataclass
class FaithfulnessResult:
    rows: list[dict]  # one per map: method, layers, heads, n, and per metric {mean, lo, hi, n}
    per_example: list[dict] = field(repr=False)
    settings: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)  # {"all": estimate, per type: estimate}
    comparisons: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    # synthetic scenes: how often the answer relies most on the asked object ({"all": estimate, per type})
    reliance: dict = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return len(self.per_example)

    @classmethod
    def build(cls, specs, per_example: list[dict], settings: dict, seconds: float = 0.0) -> FaithfulnessResult:
        types = sorted({e["type"] for e in per_example})
        correct = np.array([np.nan if e["correct"] is None else float(e["correct"]) for e in per_example])
        kinds = np.array([e["type"] for e in per_example])
        relied = [r for r in (e.get("reliance") for e in per_example) if r is not None]
        on_asked = (
            np.array([r["relied"] == r["asked"] for r in relied])
            if relied and len(relied) == len(per_example)
            else None
        )
        rows = []
        for s in specs:
            v = {m: np.array([e["scores"][s.key][m] for e in per_example]) for m in METRICS}
            row = {"key": s.key, "method": s.method, "layers": s.layers, "heads": s.heads, "n": len(per_example)}
            row.update({m: _est(v[m]) for m in METRICS})
            row["pointing_by_type"] = {t: _est(v["pointing"][kinds == t]) for t in types}
            row["pointing_correct"] = _est(v["pointing"][correct == 1])
            row["pointing_wrong"] = _est(v["pointing"][correct == 0])
            if on_asked is not None:
                row["pointing_relied"] = _est(np.array([e["scores"][s.key]["pointing_relied"] for e in per_example]))
                row["pointing_relies_on_asked"] = _est(v["pointing"][on_asked])
                row["pointing_relies_on_other"] = _est(v["pointing"][~on_asked])
                # per question: hit (0/1) minus "the answer relies on the asked object" (0/1)
                row["pointing_minus_reliance"] = paired_difference(v["pointing"], on_asked.astype(float)).to_dict()
            rows.append(row)
        accuracy = {"all": _est(correct), **{t: _est(correct[kinds == t]) for t in types}}
        reliance = {}
        if on_asked is not None:
            on = on_asked.astype(float)
            reliance = {"all": _est(on), **{t: _est(on[kinds == t]) for t in types}}
            reliance["accuracy_relies_on_asked"] = _est(correct[on_asked])
            reliance["accuracy_relies_on_other"] = _est(correct[~on_asked])
        result = cls(rows, per_example, settings, accuracy, [], seconds, reliance)
        result.comparisons = result.compare()
        return result

    def scores(self, key: str, metric: str) -> np.ndarray:
        return np.array([e["scores"][key][metric] for e in self.per_example])

    def compare(self) -> list[dict]:
        """Paired differences on the same questions: every map against the first row (the
        reference) and against the map with the best pointing game."""
        if not self.rows:
            return []
        best = max(self.rows, key=lambda r: r["pointing"]["mean"])
        out = []
        for ref in {self.rows[0]["key"]: self.rows[0], best["key"]: best}.values():
            for r in self.rows:
                if r["key"] == ref["key"]:
                    continue
                diff = {m: paired_difference(self.scores(r["key"], m), self.scores(ref["key"], m)) for m in METRICS}
                out.append({"map": r["key"], "against": ref["key"], **{m: d.to_dict() for m, d in diff.items()}})
        return out

    def best(self, metric: str = "pointing") -> dict:
        sign = -1 if metric == "deletion" else 1
        return max(self.rows, key=lambda r: sign * r[metric]["mean"])

    def to_dict(self) -> dict:
        return {
            "settings": self.settings,
            "samples": self.samples,
            "seconds": round(self.seconds, 1),
            "accuracy": self.accuracy,
            "reliance": self.reliance,
            "rows": self.rows,
            "comparisons": self.comparisons,
            "per_example": self.per_example,
        }

    # ---- outputs ----------------------------------------------------------------------------
    def table(self) -> str:
        """Markdown, paste-ready: mean [95% interval] of each metric per map."""
        types = list(self.rows[0]["pointing_by_type"]) if self.rows else []
        head = [
            "method",
            "layers",
            "heads",
            "pointing game",
            "deletion AUC (lower better)",
            "insertion AUC (higher better)",
        ]
        relied = ("pointing_relied", "pointing_relies_on_asked") if self.reliance else ()
        head += ["pointing at the object the answer relies on", "pointing when that is the asked object"][: len(relied)]
        head += [f"pointing: {t}" for t in types]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        fmt = lambda d: str(Estimate(d["mean"], d["lo"], d["hi"], d["n"]))  # noqa: E731
        for r in self.rows:
            cells = [r["method"], r["layers"], r["heads"]] + [fmt(r[m]) for m in (*METRICS, *relied)]
            cells += [f"{r['pointing_by_type'][t]['mean']:.2f} (n={r['pointing_by_type'][t]['n']})" for t in types]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        """A few lines for the terminal: sample, accuracy, the best map and how sure that is."""
        acc = self.accuracy["all"]
        best = self.best()
        lines = [
            f"{self.samples} questions about one object (seed {self.settings.get('seed')}); "
            f"model accuracy {acc['mean']:.3f} [{acc['lo']:.3f}, {acc['hi']:.3f}]; {self.seconds:.0f} s",
            f"best pointing game: {best['key']} {best['pointing']['mean']:.3f} "
            f"[{best['pointing']['lo']:.3f}, {best['pointing']['hi']:.3f}]",
        ]
        if self.reliance:
            r, p, d = self.reliance["all"], best["pointing_relied"], best["pointing_minus_reliance"]
            lines += [
                f"the answer relies most on the asked object in {r['mean']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] "
                "of the questions (each object erased from the scene in turn): about what a map that points "
                "where the model looks scores on the pointing game",
                f"  {best['key']} points at the object the answer relies on: "
                f"{p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]; its pointing game minus that rate, paired: "
                f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]",
            ]
        for c in self.comparisons:
            if c["against"] == best["key"]:
                d = c["pointing"]
                verdict = "within noise" if d["lo"] <= 0 <= d["hi"] else "outside noise"
                lines.append(f"  {c['map']} - best: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] ({verdict})")
        return "\n".join(lines)

    def save(self, path) -> dict[str, str]:
        """JSON at `path`, the Markdown table and the plot beside it (same stem)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(self.to_dict(), indent=1))  # whole or not at all: an earlier result survives
        md = path.with_suffix(".md")
        write_text(md, self.table() + "\n\n" + self.summary() + "\n")
        png = path.with_suffix(".png")
        self.plot(png)
        return {"json": str(path), "markdown": str(md), "plot": str(png)}

    def plot(self, path) -> None:
        """Pointing game per map with its 95% interval, and the mean deletion curves."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(
            1, 2, figsize=(15.5, 0.45 * len(self.rows) + 2.2), gridspec_kw={"width_ratios": [1.2, 1]}
        )
        labels = [f"{r['method']} ({r['layers']}; heads {r['heads']})" for r in self.rows]
        y = np.arange(len(self.rows))[::-1]
        means = np.array([r["pointing"]["mean"] for r in self.rows])
        err = np.array(
            [
                [r["pointing"]["mean"] - r["pointing"]["lo"], r["pointing"]["hi"] - r["pointing"]["mean"]]
                for r in self.rows
            ]
        ).T
        a.errorbar(means, y, xerr=err, fmt="o", capsize=3, label="points at the asked object")
        if self.reliance:
            r = self.reliance["all"]
            a.axvspan(
                r["lo"], r["hi"], color="tab:green", alpha=0.15, label="how often the answer relies on the asked object"
            )
            relied = [row["pointing_relied"]["mean"] for row in self.rows]
            a.plot(relied, y - 0.25, "D", mfc="none", color="tab:green", ms=5, label="points at the relied-on object")
            a.legend(fontsize=7, loc="upper left")  # the low scores sit at the bottom
        a.set_yticks(y, labels, fontsize=8)
        a.set_xlim(0, 1)
        a.axvline(0.9, color="grey", ls=":", lw=1)
        a.set_xlabel(f"pointing game (n={self.samples}, 95% bootstrap interval)")
        if self.per_example:
            x = np.array(self.per_example[0]["curves"]["x"])
            deletion = np.array([e["curves"]["deletion"] for e in self.per_example]).mean(0)  # [M, K]
            for i, r in enumerate(self.rows):
                style = "--" if r["method"] in ("random", "centre") else "-"
                b.plot(x, deletion[i], style, label=labels[i], lw=1.2)
        b.set_xlabel("fraction of vision tokens knocked out (most important first)")
        b.set_ylabel("P(answer's first token), mean over questions")
        b.set_title("deletion curves (lower is more faithful)", fontsize=10)
        b.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not over them
        fig.tight_layout()
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
