"""One self-contained HTML page for a lens: the first image under a grid of its vision tokens,
each cell showing its top readout at the chosen layer; a layer slider; hover for the top-k list.
The image is embedded as a base64 PNG and the script is inline: the file opens offline."""

from __future__ import annotations

import html
import json

from PIL import Image

from .page import data_uri

_DISPLAY = 576  # px: the image is shown this wide (upscaled if smaller) so words fit in cells


def page_data(lens) -> dict:
    """What the page's script reads: layers, the first image's token boxes and, per layer, the
    top-k list (text, score[, caption, position]) of each of its tokens."""
    n0 = lens.grids[0][0] * lens.grids[0][1] * lens.grids[0][2] if lens.grids else lens.num_tokens
    w, h = lens.image.size if lens.image is not None else (1, 1)
    return {
        "kind": lens.kind,
        "layers": lens.layers,
        "size": [w, h],
        "boxes": lens.boxes[0] if lens.boxes else [],
        "top": {
            str(layer): [[[e.text, round(e.score, 4), e.caption, e.position] for e in tok] for tok in toks[:n0]]
            for layer, toks in lens.entries.items()
        },
    }


def render_page(lens) -> str:
    data = json.dumps(page_data(lens)).replace("</", "<\\/")
    img = lens.image if lens.image is not None else Image.new("RGB", (_DISPLAY, _DISPLAY), (240, 240, 240))
    scale = _DISPLAY / img.size[0]
    height = round(img.size[1] * scale)
    score = "probability" if lens.kind == "logit" else "cosine"
    title = f"{lens.kind} lens" + (f" — {lens.prompt}" if lens.prompt else "")
    return _TEMPLATE.format(
        title=html.escape(title),
        model=html.escape(lens.model),
        kind=html.escape(lens.kind),
        score=score,
        uri=data_uri(img),  # fitted to display size: a photo's full resolution would bloat the page
        w=_DISPLAY,
        h=height,
        scale=scale,
        data=data,
        index=html.escape(f" · index {lens.index}" if lens.index else ""),
        last=len(lens.layers) - 1,
    )


_TEMPLATE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 18px; color: #222; }}
#wrap {{ position: relative; width: {w}px; height: {h}px; }}
#wrap img {{ width: {w}px; height: {h}px; image-rendering: pixelated; display: block; }}
.cell {{ position: absolute; box-sizing: border-box; border: 1px solid rgba(0,0,0,.35); display: flex;
        align-items: center; justify-content: center; overflow: hidden; font-size: 12px; font-weight: 600;
        text-align: center; line-height: 1.1; cursor: default; }}
.cell span {{ background: rgba(255,255,255,.78); padding: 0 2px; border-radius: 2px; white-space: pre; }}
.cell:hover {{ outline: 2px solid #1f6fd1; z-index: 2; }}
#tip {{ position: fixed; display: none; background: #fff; border: 1px solid #999; padding: 6px 8px;
       font-size: 12px; box-shadow: 0 2px 8px rgba(0,0,0,.2); max-width: 420px; z-index: 5; }}
#tip table {{ border-collapse: collapse; }} #tip td {{ padding: 1px 6px; }}
.ctx {{ color: #666; font-weight: normal; }}
#controls {{ margin: 10px 0; }}
</style></head><body>
<h2>{title}</h2>
<div class="ctx">model {model}{index} · cells: top readout of each vision token ({kind} lens, {score}); hover for the list</div>
<div id="controls">layer <input id="layer" type="range" min="0" max="{last}" value="{last}" step="1">
 <b id="lname"></b></div>
<div id="wrap"><img src="{uri}" alt="input image"></div>
<div id="tip"></div>
<script type="application/json" id="lens-data">{data}</script>
<script>
const D = JSON.parse(document.getElementById('lens-data').textContent);
const S = {scale}, wrap = document.getElementById('wrap'), tip = document.getElementById('tip');
const slider = document.getElementById('layer'), cells = [];
const show = s => JSON.stringify(s).slice(1, -1);
D.boxes.forEach((b, t) => {{
  const c = document.createElement('div'); c.className = 'cell';
  c.style.left = (b[0] * S) + 'px'; c.style.top = (b[1] * S) + 'px';
  c.style.width = ((b[2] - b[0]) * S) + 'px'; c.style.height = ((b[3] - b[1]) * S) + 'px';
  const s = document.createElement('span'); c.appendChild(s); wrap.appendChild(c); cells.push(s);
  c.addEventListener('mousemove', e => {{
    const rows = D.top[String(D.layers[slider.value])][t];
    const tb = document.createElement('table');
    const head = tb.insertRow(); head.insertCell().textContent = 'token ' + t + ', layer ' + D.layers[slider.value];
    rows.forEach(r => {{
      const tr = tb.insertRow(); tr.insertCell().textContent = show(r[0]); tr.insertCell().textContent = r[1].toFixed(3);
      if (r[2] !== null) {{ const td = tr.insertCell(); td.className = 'ctx'; td.textContent = r[2] + ' (@' + r[3] + ')'; }}
    }});
    tip.replaceChildren(tb); tip.style.display = 'block';
    tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
  }});
  c.addEventListener('mouseleave', () => {{ tip.style.display = 'none'; }});
}});
function draw() {{
  const layer = String(D.layers[slider.value]);
  document.getElementById('lname').textContent = 'llm.layers.' + layer;
  D.top[layer].forEach((rows, t) => {{ if (cells[t]) cells[t].textContent = rows.length ? show(rows[0][0]) : ''; }});
}}
slider.addEventListener('input', draw); draw();
</script></body></html>
"""
