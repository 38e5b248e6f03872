"""The Maps tab: method, layer and head ranges, aggregations, colours and frame of the map shown
for the picked token, redrawn on every change, and its exports (PNG, PDF of every token, the HTML
report). Raw maps come from the rows captured during the generate, without running the model."""

from __future__ import annotations

import json
import time
from typing import Any

from ...errors import VlmscopeError
from ...methods.registry import MAP_METHODS
from ..maps import AGGREGATIONS, COLORMAPS, VIEWS, MapSettings, describe, map_values, render, token_maps
from ..tab import Shared, Tab, gradio, guard, need_session, note_line


def map_settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks) -> MapSettings:
    """The settings the map controls' values say."""
    return MapSettings(
        method=method or "raw",
        layers=(int(l_lo), int(l_hi)),
        heads=(int(h_lo), int(h_hi)),
        head_agg=head_agg or "mean",
        layer_agg=layer_agg or "mean",
        exclude_sinks=bool(sinks),
    )


def colormap(cmap: str | None) -> str | None:
    """The colormap control's value as the drawing takes it (None: the map's own choice)."""
    return None if cmap in (None, "auto") else cmap


class MapsTab(Tab):
    title, id = "Maps", "maps"

    def layout(self, gr) -> None:
        first = self.shared.models.scopes[self.shared.models.names[0]].adapter
        n_layers, n_heads = first.num_layers, first.num_heads
        self.method = gr.Radio(list(MAP_METHODS), value="raw", label="Method", elem_id="vs-method")
        with gr.Row():
            self.layer_lo = gr.Slider(0, n_layers - 1, value=0, step=1, label="First layer", elem_id="vs-layer-lo")
            self.layer_hi = gr.Slider(
                0, n_layers - 1, value=n_layers - 1, step=1, label="Last layer", elem_id="vs-layer-hi"
            )
            self.head_lo = gr.Slider(0, n_heads - 1, value=0, step=1, label="First head", elem_id="vs-head-lo")
            self.head_hi = gr.Slider(0, n_heads - 1, value=n_heads - 1, step=1, label="Last head", elem_id="vs-head-hi")
        with gr.Row():
            self.head_agg = gr.Radio(list(AGGREGATIONS), value="mean", label="Heads", elem_id="vs-head-agg")
            self.layer_agg = gr.Radio(list(AGGREGATIONS), value="mean", label="Layers (raw)", elem_id="vs-layer-agg")
            self.sinks = gr.Checkbox(False, label="Exclude attention sinks", elem_id="vs-sinks")
        with gr.Row():
            self.cmap = gr.Dropdown(list(COLORMAPS), value="auto", label="Colormap", elem_id="vs-cmap")
            self.alpha = gr.Slider(
                0, 1, value=0.75, step=0.05, label="Opacity at the top of the scale", elem_id="vs-alpha"
            )
            self.view = gr.Radio(list(VIEWS), value="overlay", label="View", elem_id="vs-view")
        self.frame = gr.Slider(0, 1, value=0, step=1, label="Video frame group", visible=False, elem_id="vs-frame")
        self.map_image = gr.Image(
            label="Map", type="pil", format="png", interactive=False, elem_id="vs-map", buttons=["fullscreen"]
        )
        self.map_info = gr.HTML(elem_id="vs-map-info")
        self.map_values = gr.Textbox(visible="hidden", elem_id="vs-map-values")
        with gr.Row():
            self.png_btn = gr.Button("Export PNG", size="sm", elem_id="vs-export-png")
            self.pdf_btn = gr.Button("Export PDF (every token)", size="sm", elem_id="vs-export-pdf")
            self.html_btn = gr.Button("Export HTML report (every method)", size="sm", elem_id="vs-export-html")
        self.export = gr.File(label="Download", interactive=False, elem_id="vs-export", height=80)
        # what a map depends on, after the session and the token: the method's settings, then the drawing's
        self.settings = [
            self.method,
            self.layer_lo,
            self.layer_hi,
            self.head_lo,
            self.head_hi,
            self.head_agg,
            self.layer_agg,
            self.sinks,
        ]
        self.drawing = [self.cmap, self.alpha, self.view, self.frame]
        self.outputs = [self.map_image, self.map_info, self.map_values, self.status]

    def wire(self, gr) -> None:
        shared = self.shared
        inputs = [shared.session, shared.token, *self.settings, *self.drawing]
        for c in inputs[1:]:
            c.change(self.on_map, inputs, self.outputs, trigger_mode="always_last", concurrency_limit=None)
        for kind, button in (("png", self.png_btn), ("pdf", self.pdf_btn), ("html", self.html_btn)):
            button.click(self.on_export, [shared.session, gr.State(kind), *inputs[1:]], [self.export, self.status])

    # ---- a new generate -------------------------------------------------------------------------
    def cleared(self) -> dict:
        return {self.map_image: None, self.map_info: "", self.map_values: ""}

    def generate_outputs(self) -> list:
        return [self.frame, self.layer_lo, self.layer_hi, self.head_lo, self.head_hi, *self.outputs]

    def generate_inputs(self) -> list:
        return [*self.settings, *self.drawing]

    def generated(self, session, run, *controls) -> dict:
        """The frame slider and the ranges fitted to the run's model, and the first token's map."""
        gr = gradio()
        ad = run.scope.adapter
        groups = run.frame_groups()
        out: dict[Any, Any] = {
            self.frame: gr.update(maximum=max(groups - 1, 1), value=0, visible=groups > 1),
            self.layer_lo: gr.update(maximum=ad.num_layers - 1),
            self.layer_hi: gr.update(maximum=ad.num_layers - 1, value=min(int(controls[2]), ad.num_layers - 1)),
            self.head_lo: gr.update(maximum=ad.num_heads - 1),
            self.head_hi: gr.update(maximum=ad.num_heads - 1, value=min(int(controls[4]), ad.num_heads - 1)),
        }
        values = list(controls)
        values[2], values[4] = min(int(values[2]), ad.num_layers - 1), min(int(values[4]), ad.num_heads - 1)
        values[1], values[3] = min(int(values[1]), values[2]), min(int(values[3]), values[4])
        out.update(self.on_map(session, 0, *values[:-1], 0))
        return out

    # ---- handlers -------------------------------------------------------------------------------
    @guard
    def on_map(
        self, session, token, method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks, cmap, alpha, view, frame
    ):
        if session is None or session.run is None or token is None:
            return self.nothing()
        run = session.run
        settings = map_settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
        started = time.perf_counter()
        maps = token_maps(run, settings, lock=self.shared.models.locks[run.model])
        image = render(maps, run, int(token), int(frame or 0), colormap(cmap), alpha, view)
        seconds = time.perf_counter() - started
        session.shown = image
        return {
            self.map_image: image,
            self.map_info: note_line(describe(maps, int(token), seconds)),
            self.map_values: json.dumps(map_values(maps, int(token), int(frame or 0))),
            self.status: "",
        }

    @guard
    def on_export(
        self, session, kind, token, method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks, cmap, alpha, view, frame
    ):
        session = need_session(session)
        run = session.need_run()
        out = session.out_dir
        stem = f"vlmscope-{run.model.replace(' ', '_')}"
        if kind == "png":
            if session.shown is None:
                raise VlmscopeError("pick a token first")
            path = out / f"{stem}-token{token}.png"
            session.shown.save(path)
        elif kind == "pdf":
            settings = map_settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
            maps = token_maps(run, settings, lock=self.shared.models.locks[run.model])
            c = colormap(cmap)
            pages = [
                render(maps, run, j, int(frame or 0), c, alpha, view).convert("RGB") for j in range(len(maps.tokens))
            ]
            path = out / f"{stem}-{settings.method}.pdf"
            pages[0].save(path, save_all=True, append_images=pages[1:])
        else:
            if run.example.videos:
                raise VlmscopeError("the HTML report takes images; export this video's maps as PDF")
            from ...report import run_report

            target = out / f"{stem}-report"
            with self.shared.models.locks[run.model]:
                _, page = run_report(
                    run.scope, list(run.example.images), run.example.prompt, target, max_new_tokens=len(run.answer.ids)
                )
            path = page.with_name(f"{stem}-report.html")
            page.replace(path)
        return {self.export: str(path), self.status: note_line(f"exported {path.name}")}


def maps_tab(shared: Shared) -> MapsTab:
    """The page's Maps tab, whose controls other tabs read."""
    tab = shared.tabs[MapsTab.id]
    assert isinstance(tab, MapsTab)
    return tab
