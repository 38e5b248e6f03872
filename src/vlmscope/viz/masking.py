"""Pictures of a MaskingResult: heatmaps over the image for vision units, and a coloured prompt
(HTML) plus a unit x answer-token table (PNG) for text units."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .overlay import colorbar_image, draw_map, fit, grid, map_scale, strip, token_grid


def save_heatmaps(result, out: Path, metric: str = "drop") -> list[Path]:
    """Per image: one map per answer token, one for the whole answer, and a contact sheet; every
    map at display size with a colour bar, the per-token maps on one scale shared by the tokens.

    The sheet reads left to right: the image; the whole answer with its own colour bar; the
    answer tokens, each captioned with its index and text, then the one colour bar they share
    ("shared")."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in sorted({u.image for u in result.units if u.kind == "vision"}):
        visual, image = result.token_map.visual(k), result.images[k]
        per_token = [token_grid(result.vision_map(k, j, metric), visual) for j in range(len(result.answer_tokens))]
        shared = map_scale(np.concatenate([g.ravel() for g in per_token]), "shared")
        total = token_grid(result.vision_map(k, None, metric), visual)
        own = map_scale(total, "token")
        tiles = []
        for j, (heat, scale) in enumerate([(total, own), *((g, shared) for g in per_token)]):
            name = f"image{k}_total.png" if j == 0 else f"image{k}_token{j - 1:02d}.png"
            draw_map(image, heat, scale=scale, colorbar=True).save(out / name)
            written.append(out / name)
            tiles.append(draw_map(image, heat, scale=scale, max_side=256))
        titles = [f"{j}: {t!r}" for j, t in enumerate(result.answer_tokens)]
        small = fit(image, 256)
        sheet = strip(
            [
                grid([small], ["image"]),
                grid([tiles[0]], ["whole answer"]),
                grid([colorbar_image(own, small.height)], ["scale"]),
                grid(tiles[1:], titles),
                grid([colorbar_image(shared, small.height)], ["shared"]),
            ],
            gap=8,
        )
        sheet.save(out / f"image{k}_sheet.png")
        written.append(out / f"image{k}_sheet.png")
    return written


def _colour(value: float, scale: float) -> str:
    """Red for units that support the answer, blue for units whose masking helps it."""
    a = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0)
    return f"rgba(215,40,40,{a:.2f})" if value >= 0 else f"rgba(40,90,215,{a:.2f})"


def save_text_importance(result, out: Path, metric: str = "drop") -> tuple[Path, Path]:
    """text_importance.html (the prompt coloured by impact on the whole answer, and per answer
    token) and text_importance.png (units x answer tokens)."""
    idx = [i for i, u in enumerate(result.units) if u.kind == "text"]
    labels = [result.units[i].label for i in idx]
    per_token = np.stack([result.impact(metric, j)[idx] for j in range(len(result.answer_tokens))], 1)
    total = result.impact(metric)[idx]
    what = "drop in log-probability" if metric == "drop" else "KL divergence"

    def line(values: np.ndarray) -> str:
        scale = float(np.abs(values).max())
        return " ".join(
            f'<span title="{v:+.4f}" style="background:{_colour(v, scale)}">{html.escape(t)}</span>'
            for t, v in zip(labels, values)
        )

    rows = "".join(
        f"<tr><td>{j}: {html.escape(repr(t))}</td><td>{line(per_token[:, j])}</td></tr>"
        for j, t in enumerate(result.answer_tokens)
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>text importance</title>"
        f"<body style='font-family:sans-serif'><h3>{html.escape(result.prompt)}</h3>"
        f"<p>answer: <b>{html.escape(result.answer_text)}</b>; colour: {what} when the unit is masked "
        f"({html.escape(result.settings.get('perturbation', ''))}); hover for values</p>"
        f"<p>whole answer: {line(total)}</p><table>{rows}</table></body>"
    )
    html_path = out / "text_importance.html"
    html_path.write_text(page)
    png_path = out / "text_importance.png"
    _matrix_png(
        np.concatenate([per_token, total[:, None]], 1),
        labels,
        [repr(t) for t in result.answer_tokens] + ["answer"],
        what,
        png_path,
    )
    return html_path, png_path


def _matrix_png(values: np.ndarray, rows: list[str], cols: list[str], what: str, path: Path) -> None:
    """Units x answer tokens, diverging around zero; the figure grows with its labels and is
    saved with a tight bounding box, so no label is clipped."""
    from matplotlib.figure import Figure

    scale = float(np.abs(values).max()) or 1.0
    longest = max((len(r) for r in rows), default=1)
    longest_col = max((len(c) for c in cols), default=1)
    # room for the labels: about 0.07 inch per character at 8 pt, plus the colour bar
    width = 2.0 + 0.07 * longest + 0.45 * len(cols)
    height = 1.2 + 0.05 * longest_col + 0.28 * len(rows)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("answer token", fontsize=8)
    ax.set_ylabel("masked prompt unit", fontsize=8)
    fig.colorbar(im, ax=ax, label=what)
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
