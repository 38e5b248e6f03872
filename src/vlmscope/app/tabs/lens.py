"""The Lens tab: the top word of every vision token's residual stream, per layer, over the first
image or frame (the logit or embedding lens of the run's answer)."""

from __future__ import annotations

import html

from ...errors import VlmscopeError
from ..tab import Tab, gradio, guard, need_session, note_line


class LensTab(Tab):
    title, id = "Lens", "lens"
    css = (
        ".vs-lens .vs-cell{border:1px solid rgba(255,255,255,.6);color:#fff;text-shadow:0 0 3px #000,0 0 2px #000;\n"
        "  display:flex;align-items:center;justify-content:center;overflow:hidden;white-space:nowrap}\n"
    )

    def layout(self, gr) -> None:
        from ...methods.lens.method import LENS_METHODS

        kinds = [k for k in LENS_METHODS if k != "contextual"]  # the contextual lens needs a caption index
        gr.Markdown("The top word of every vision token's residual stream, per layer (first image or frame).")
        with gr.Row():
            self.lens_kind = gr.Radio(kinds, value=kinds[0], label="Lens", elem_id="vs-lens-kind")
            self.lens_btn = gr.Button("Run lens", elem_id="vs-lens-run")
        self.lens_layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="vs-lens-layer")
        self.lens_html = gr.HTML(elem_id="vs-lens-grid")

    def wire(self, gr) -> None:
        session = self.shared.session
        self.lens_btn.click(self.on_lens, [session, self.lens_kind], [self.lens_layer, self.lens_html, self.status])
        self.lens_layer.change(self.on_lens_layer, [session, self.lens_layer], [self.lens_html, self.status])

    def cleared(self) -> dict:
        return {self.lens_html: ""}

    def generate_outputs(self) -> list:
        return [self.lens_html]

    @guard
    def on_lens(self, session, kind):
        from ...methods.lens.method import LENS_METHODS

        session = need_session(session)
        run = session.need_run()
        with self.shared.models.locks[run.model]:
            session.lens = LENS_METHODS[kind]().attribute(run.scope, run.example, run.answer)
        lens = session.lens
        gr = gradio()
        return {
            self.lens_layer: gr.update(
                maximum=max(len(lens.layers) - 1, 1), value=0, label="Layer (index into the lens' layers)"
            ),
            self.lens_html: lens_grid_html(lens, 0),
            self.status: note_line(f"{kind} lens over {len(lens.layers)} layers"),
        }

    @guard
    def on_lens_layer(self, session, layer):
        if session is None or session.lens is None:
            return self.nothing()
        return {self.lens_html: lens_grid_html(session.lens, int(layer))}


def lens_grid_html(lens, layer_index: int) -> str:
    """The first image under its token grid, each cell showing its top word at one layer; hover a
    cell for the top-k list."""
    from ...viz.page import data_uri

    if not lens.layers:
        raise VlmscopeError("the lens has no layers")
    layer = lens.layers[min(max(layer_index, 0), len(lens.layers) - 1)]
    t, h, w = lens.grids[0] if lens.grids else (1, 1, lens.num_tokens)
    cells = []
    for i, entries in enumerate(lens.entries[layer][: h * w]):
        top = html.escape(entries[0].text.strip() or repr(entries[0].text)) if entries else ""
        tip = html.escape(", ".join(f"{e.text!r} {e.score:.2f}" for e in entries))
        cells.append(f'<div class="vs-cell" title="{tip}" data-i="{i}">{top}</div>')
    bg = data_uri(lens.image) if lens.image is not None else ""
    return (
        f'<div class="vs-lens-caption">layer {layer} ({lens.kind} lens; {h}x{w} tokens)</div>'
        f'<div class="vs-lens" style="display:grid;grid-template-columns:repeat({w},1fr);'
        f"aspect-ratio:{lens.image.size[0] if lens.image else 1}/{lens.image.size[1] if lens.image else 1};"
        f'max-width:520px;background:url({bg}) center/100% 100% no-repeat;font:11px monospace;">'
        + "".join(cells)
        + "</div>"
    )
