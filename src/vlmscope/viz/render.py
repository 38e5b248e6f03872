"""Writing map results to disk: PNG overlays, a token grid, PDF, .npz, and self-contained HTML."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .overlay import colorize, grid, overlay, side_by_side


def _slug(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", token).strip("_")[:16] or "tok"


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def data_uri(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode()


def token_overlays(result, visual: int = 0, cmap: str = "jet", alpha: float = 0.5) -> list[Image.Image]:
    """One overlay per generated token on visual k (first frame for videos)."""
    image = result.images[visual]
    return [overlay(image, result.pixel_map(j, visual), cmap, alpha) for j in range(len(result.tokens))]


def save_maps(result, out_dir, formats=("png", "npz", "html"), cmap: str = "jet", alpha: float = 0.5) -> dict[str, str]:
    """Write `result` (an AttentionMaps-like object) under `out_dir`; returns what went where."""
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
    pages: list[Image.Image] = []
    for k in range(len(result.images)):
        overlays = token_overlays(result, k, cmap, alpha)
        titles = [f"{j}: {t!r}" for j, t in enumerate(result.tokens)]
        sheet = grid(overlays, titles)
        pages.append(sheet)
        if "png" in formats:
            tok_dir = out / "tokens"
            tok_dir.mkdir(exist_ok=True)
            for j, ov in enumerate(overlays):
                name = f"v{k}_{j:02d}_{_slug(result.tokens[j])}"
                side_by_side(result.images[k].convert("RGB"), ov).save(tok_dir / f"{name}.png")
                colorize(result.pixel_map(j, k), cmap).save(tok_dir / f"{name}_heatmap.png")
            sheet.save(out / f"grid_v{k}.png")
            written[f"grid_v{k}"] = str(out / f"grid_v{k}.png")
    if "pdf" in formats and pages:
        pages[0].save(out / "maps.pdf", save_all=True, append_images=pages[1:])
        written["pdf"] = str(out / "maps.pdf")
    if "html" in formats:
        page = html_report(
            f"vlmscope {result.method} maps",
            result.answer,
            result.token_map.summary(),
            {result.method: [token_overlays(result, k, cmap, alpha) for k in range(len(result.images))]},
            result.tokens,
        )
        (out / "report.html").write_text(page)
        written["html"] = str(out / "report.html")
    return written


def html_report(
    title: str,
    answer: str,
    token_map: dict,
    methods: dict[str, list[list[Image.Image]]],
    tokens: list[str],
    notes: dict[str, str] | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> str:
    """One HTML file with every image embedded: pick a method and a token to see its map.

    `methods[name][visual][j]` is the overlay of token j on visual k for that method; `sections`
    are (heading, self-contained page) pairs shown below, each in a sandboxed frame.
    """
    frames = "".join(
        f'<h2>{html.escape(head)}</h2><iframe sandbox="allow-scripts" style="width:100%;height:760px;'
        f'border:1px solid #ccc" srcdoc="{html.escape(page, quote=True)}"></iframe>'
        for head, page in sections
    )
    payload = {name: [[data_uri(im) for im in per_visual] for per_visual in vis] for name, vis in methods.items()}
    buttons = "".join(f'<button class="tok" data-j="{j}">{html.escape(repr(t))}</button>' for j, t in enumerate(tokens))
    options = "".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in methods)
    note_html = "".join(f"<p><b>{html.escape(k)}</b>: {html.escape(v)}</p>" for k, v in (notes or {}).items())
    n_visuals = max((len(v) for v in methods.values()), default=0)
    imgs = "".join(f'<figure><img id="img{k}"><figcaption>visual {k}</figcaption></figure>' for k in range(n_visuals))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px}}
button.tok{{margin:2px;padding:3px 6px;border:1px solid #888;background:#f4f4f4;cursor:pointer}}
button.tok.on{{background:#ffd54f}} figure{{display:inline-block;margin:6px}} img{{width:384px;image-rendering:pixelated}}
pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p><b>Answer:</b> {html.escape(answer)}</p>
{note_html}
<p>Method: <select id="method">{options}</select></p>
<div id="tokens">{buttons}</div>
<div>{imgs}</div>
{frames}
<details><summary>Token map</summary><pre>{html.escape(json.dumps(token_map, indent=1))}</pre></details>
<script>
const MAPS = {json.dumps(payload)};
let j = 0;
function show() {{
  const m = document.getElementById('method').value;
  MAPS[m].forEach((perVisual, k) => {{ document.getElementById('img' + k).src = perVisual[j]; }});
  document.querySelectorAll('button.tok').forEach(b => b.classList.toggle('on', +b.dataset.j === j));
}}
document.querySelectorAll('button.tok').forEach(b => b.onclick = () => {{ j = +b.dataset.j; show(); }});
document.getElementById('method').onchange = show;
show();
</script>
</body></html>
"""
