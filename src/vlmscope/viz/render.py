"""Writing one method's maps to disk: titled PNG figures, a token grid, a vector PDF, .npz, HTML.

Every picture is drawn at display resolution (long side <= `overlay.MAX_SIDE`), whatever the
size of the input image, and carries the question, the token, the method and its scale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import VlmscopeError
from .overlay import MAX_SIDE, draw_map, map_scale


def _slug(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", token).strip("_")[:16] or "tok"


def _prompt_text(result) -> str:
    """The question shown in figure titles: ``settings['question']`` when a caller set it."""
    q = result.settings.get("question")
    return str(q) if q else ""


def save_maps(
    result,
    out_dir,
    formats=("png", "npz", "html"),
    cmap: str | None = None,
    alpha: float = 0.75,
    scale: str = "token",
    question: str | None = None,
) -> dict[str, str]:
    """Write `result` (TokenMaps) under `out_dir`; returns what went where.

    png: ``tokens/v{k}_{j}_{word}.png`` (image | map + colour bar, titled; `scale` 'token' or
    'shared'), ``..._heatmap.png`` (the map alone over the image, display size) and
    ``grid_v{k}.png`` (every token, shared scale); pdf: ``maps.pdf`` (the grid, then one page per
    token, vector text and colour bars); html: ``report.html`` (grid + detail, both scales);
    npz: ``maps.npz`` + ``token_map.json``. `question` goes into every title (default: the
    method's ``settings['question']``)."""
    if scale not in ("token", "shared"):
        raise VlmscopeError(f"unknown map scale {scale!r}; choose from token, shared")
    question = question if question is not None else _prompt_text(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if "npz" in formats:
        arrays = {"maps": result.maps, "token_ids": np.asarray(result.token_ids)}
        if getattr(result, "text_maps", None) is not None:
            arrays["text_maps"] = result.text_maps
        np.savez_compressed(out / "maps.npz", **arrays)
        (out / "token_map.json").write_text(json.dumps(result.token_map.to_dict()))
        written["npz"] = str(out / "maps.npz")
    if "png" in formats or "pdf" in formats:
        written.update(_figures(result, out, formats, cmap, alpha, scale, question))
    if "html" in formats:
        from .page import maps_context, render

        notes = {"method": f"{result.method}: {_options(result)}"}
        page = render(
            "maps_report.html.j2",
            title=f"vlmscope {result.method} maps",
            question=question or "(question not recorded)",
            answer=result.answer,
            maps=maps_context({result.method: result}, cmap=cmap, alpha=alpha),
            token_map=result.token_map.summary(),
            notes=notes,
        )
        (out / "report.html").write_text(page)
        written["html"] = str(out / "report.html")
    return written


def _options(result) -> str:
    skip = {"method", "question", "sink_reasons"}
    return ", ".join(f"{k}={v}" for k, v in result.settings.items() if k not in skip)


def _figures(result, out: Path, formats, cmap, alpha, scale, question) -> dict[str, str]:
    from .figure import grid_figure, map_figure

    written: dict[str, str] = {}
    pdf = None
    if "pdf" in formats:
        from matplotlib.backends.backend_pdf import PdfPages

        pdf = PdfPages(out / "maps.pdf")
    note = f"excluded attention sinks (vision token columns): {result.sinks}" if result.sinks else ""
    try:
        for k in range(len(result.images)):
            image = result.images[k]
            grids = [result.visual_map(j, k)[0] for j in range(len(result.tokens))]
            titles = [f"{j}: {t!r}" for j, t in enumerate(result.tokens)]
            sheet = grid_figure(image, grids, titles, question=question, method=result.method, cmap=cmap, alpha=alpha)
            if "png" in formats:
                sheet.savefig(out / f"grid_v{k}.png", dpi=110)
                written[f"grid_v{k}"] = str(out / f"grid_v{k}.png")
            if pdf is not None:
                pdf.savefig(sheet)
            shared = map_scale(np.concatenate([g.ravel() for g in grids]), "shared")
            tok_dir = out / "tokens"
            for j, g in enumerate(grids):
                sc = shared if scale == "shared" else map_scale(g, "token")
                fig = map_figure(
                    image,
                    g,
                    question=question,
                    token=result.tokens[j],
                    index=j,
                    method=result.method,
                    scale=sc,
                    cmap=cmap,
                    alpha=alpha,
                    note=note,
                )
                if "png" in formats:
                    tok_dir.mkdir(exist_ok=True)
                    name = f"v{k}_{j:02d}_{_slug(result.tokens[j])}"
                    fig.savefig(tok_dir / f"{name}.png", dpi=110)
                    draw_map(image, g, cmap=cmap, alpha=alpha, scale=sc, colorbar=True, max_side=MAX_SIDE).save(
                        tok_dir / f"{name}_heatmap.png"
                    )
                if pdf is not None:
                    pdf.savefig(fig)
    finally:
        if pdf is not None:
            pdf.close()
    if pdf is not None:
        written["pdf"] = str(out / "maps.pdf")
    return written
