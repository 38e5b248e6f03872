"""The Gradio page: built by `build()`, with no module-level model or state.

Upload images or a video, prompt, generate (the answer streams in; Stop cancels), pick a token and
see its map. Every layer's attention rows of the generated tokens are captured during the generate,
so changing the token, layers, heads, aggregation, colours or frame redraws the raw map without
running the model. Every handler turns an error into one line in the page (`_guard`).
"""

from __future__ import annotations

import functools
import html
import json
import time
from typing import TYPE_CHECKING, Any

from ..errors import VlmscopeError
from ..methods.registry import MAP_METHODS
from ..viz.overlay import strip
from .inputs import Limits, build_example
from .maps import (
    AGGREGATIONS,
    COLORMAPS,
    VIEWS,
    MapSettings,
    Run,
    capture_plan,
    describe,
    map_values,
    render,
    token_labels,
    token_maps,
)
from .session import Models, Session

if TYPE_CHECKING:
    import gradio as gr

VIDEO_TYPES = [".gif", ".webp", ".png", ".apng", ".mp4", ".webm", ".mov"]


def error_line(e: BaseException) -> str:
    """One line for the page: a VlmscopeError's own message; anything else named by its type."""
    text = str(e) if isinstance(e, VlmscopeError) else f"{e.__class__.__name__}: {e}"
    text = " ".join(text.split()) or e.__class__.__name__
    return f'<div class="vs-error" role="alert">⚠ {html.escape(text[:500])}</div>'


def note_line(text: str) -> str:
    return f'<div class="vs-note">{html.escape(text)}</div>'


def _guard(status_index: int | None = None):
    """Wrap a handler returning a dict of updates: an exception becomes one line in the status."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args):
            try:
                return fn(self, *args)
            except Exception as e:  # every failure is one line in the page, never a traceback
                return {self.status: error_line(e)}

        return inner

    return wrap


class App:
    """Components and handlers of one page; `blocks` is the gr.Blocks."""

    def __init__(self, models: Models, limits: Limits):
        import gradio as gr

        self.models, self.limits = models, limits
        first = models.scopes[models.names[0]].adapter
        n_layers, n_heads = first.num_layers, first.num_heads
        with gr.Blocks(title="vlmscope") as self.blocks:
            self.session = gr.State(None)
            gr.Markdown(f"## vlmscope · {html.escape(', '.join(models.names))}")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    self.images = gr.File(
                        label="Images", file_count="multiple", file_types=["image"], elem_id="vs-images", height=120
                    )
                    self.video = gr.File(
                        label="Video (animated GIF/WebP/PNG; MP4 with PyAV)",
                        file_types=VIDEO_TYPES,
                        elem_id="vs-video",
                        height=90,
                    )
                    self.prompt = gr.Textbox(label="Prompt", lines=2, elem_id="vs-prompt")
                    self.model = gr.Dropdown(
                        models.names, value=models.names[0], label="Model", visible=len(models.names) > 1
                    )
                    self.max_new = gr.Slider(1, limits.max_new_tokens, value=16, step=1, label="Max new tokens")
                    with gr.Row():
                        self.generate_btn = gr.Button("Generate", variant="primary", elem_id="vs-generate")
                        self.stop_btn = gr.Button("Stop", elem_id="vs-stop")
                    self.status = gr.HTML(elem_id="vs-status")
                with gr.Column(scale=2):
                    self.answer = gr.Textbox(label="Answer", interactive=False, elem_id="vs-answer")
                    self.token = gr.Radio([], type="index", label="Generated tokens (click one)", elem_id="vs-tokens")
                    with gr.Tabs():
                        with gr.Tab("Maps", id="maps"):
                            self._map_controls(gr, n_layers, n_heads)
                        with gr.Tab("Masking", id="masking"):
                            self._masking_tab(gr)
                        with gr.Tab("Lens", id="lens"):
                            self._lens_tab(gr)
                        if len(models.names) > 1:
                            with gr.Tab("Compare", id="compare"):
                                self._compare_tab(gr)
            self._wire(gr)

    # ---- layout ---------------------------------------------------------------------------------
    def _map_controls(self, gr, n_layers: int, n_heads: int) -> None:
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

    def _masking_tab(self, gr) -> None:
        gr.Markdown(
            "Knock each prompt word and each vision token out of attention, one at a time, and score the "
            "answer teacher-forced: the drop in the selected token's log-probability (positive: it supported "
            "the token)."
        )
        self.mask_btn = gr.Button("Run masking", elem_id="vs-mask-run")
        self.mask_text = gr.HighlightedText(
            label="Prompt words (drop in log-probability)", combine_adjacent=False, elem_id="vs-mask-text"
        )
        self.mask_image = gr.Image(label="Vision tokens", type="pil", interactive=False, elem_id="vs-mask-image")
        self.mask_values = gr.Textbox(visible="hidden", elem_id="vs-mask-values")

    def _lens_tab(self, gr) -> None:
        from ..methods.lens.method import LENS_METHODS

        kinds = [k for k in LENS_METHODS if k != "contextual"]  # the contextual lens needs a caption index
        gr.Markdown("The top word of every vision token's residual stream, per layer (first image or frame).")
        with gr.Row():
            self.lens_kind = gr.Radio(kinds, value=kinds[0], label="Lens", elem_id="vs-lens-kind")
            self.lens_btn = gr.Button("Run lens", elem_id="vs-lens-run")
        self.lens_layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="vs-lens-layer")
        self.lens_html = gr.HTML(elem_id="vs-lens-grid")

    def _compare_tab(self, gr) -> None:
        gr.Markdown(
            "The same images and prompt on every loaded model: answers side by side, and one row per token the "
            "answers share, each map drawn over the pixels (grids differ between families and sizes). Uses the "
            "method and the layer and head ranges of the Maps tab (clipped to each model)."
        )
        with gr.Row():
            self.same_answer = gr.Checkbox(
                False, label="Explain the first model's answer on every model (teacher-forced)", elem_id="vs-same"
            )
            self.compare_btn = gr.Button("Compare models", elem_id="vs-compare-run")
        self.compare_html = gr.HTML(elem_id="vs-compare")
        self.compare_values = gr.Textbox(visible="hidden", elem_id="vs-compare-values")

    # ---- wiring ---------------------------------------------------------------------------------
    def _wire(self, gr) -> None:
        limits = self.limits
        self.blocks.load(lambda: Session(limits=limits), outputs=self.session)
        self.map_inputs = [
            self.session,
            self.token,
            self.method,
            self.layer_lo,
            self.layer_hi,
            self.head_lo,
            self.head_hi,
            self.head_agg,
            self.layer_agg,
            self.sinks,
            self.cmap,
            self.alpha,
            self.view,
            self.frame,
        ]
        map_outputs = [self.map_image, self.map_info, self.map_values, self.status]
        gen_outputs = [self.answer, self.token, self.status, self.frame, self.layer_lo, self.layer_hi]
        gen_outputs += [self.head_lo, self.head_hi, *map_outputs, self.mask_text, self.mask_image, self.lens_html]
        gen = self.generate_btn.click(
            self.on_generate,
            [self.session, self.images, self.video, self.prompt, self.model, self.max_new, *self.map_inputs[2:]],
            gen_outputs,
            concurrency_limit=None,
        )
        self.stop_btn.click(self.on_stop, [self.session], [self.status], cancels=[gen], concurrency_limit=None)
        for c in self.map_inputs[1:]:
            c.change(self.on_map, self.map_inputs, map_outputs, trigger_mode="always_last", concurrency_limit=None)
        self.png_btn.click(
            self.on_export, [self.session, gr.State("png"), *self.map_inputs[1:]], [self.export, self.status]
        )
        self.pdf_btn.click(
            self.on_export, [self.session, gr.State("pdf"), *self.map_inputs[1:]], [self.export, self.status]
        )
        self.html_btn.click(
            self.on_export, [self.session, gr.State("html"), *self.map_inputs[1:]], [self.export, self.status]
        )
        mask_out = [self.mask_text, self.mask_image, self.mask_values, self.status]
        self.mask_btn.click(
            self.on_masking, [self.session, self.token, self.cmap, self.alpha, gr.State(True)], mask_out
        )
        self.token.change(self.on_masking, [self.session, self.token, self.cmap, self.alpha, gr.State(False)], mask_out)
        self.lens_btn.click(
            self.on_lens, [self.session, self.lens_kind], [self.lens_layer, self.lens_html, self.status]
        )
        self.lens_layer.change(self.on_lens_layer, [self.session, self.lens_layer], [self.lens_html, self.status])
        if len(self.models.names) > 1:
            self.compare_btn.click(
                self.on_compare,
                [
                    self.session,
                    self.images,
                    self.video,
                    self.prompt,
                    self.max_new,
                    self.same_answer,
                    *self.map_inputs[2:12],
                ],
                [self.compare_html, self.compare_values, self.status],
            )

    # ---- handlers -------------------------------------------------------------------------------
    @staticmethod
    def _settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks) -> MapSettings:
        return MapSettings(
            method=method or "raw",
            layers=(int(l_lo), int(l_hi)),
            heads=(int(h_lo), int(h_hi)),
            head_agg=head_agg or "mean",
            layer_agg=layer_agg or "mean",
            exclude_sinks=bool(sinks),
        )

    def _nothing(self) -> dict:
        """No change on the page (every guarded handler has the status line among its outputs)."""
        return {self.status: _gradio().skip()}

    def _session(self, session: Session | None) -> Session:
        if session is None:  # the page's load event has not run yet
            raise VlmscopeError("the page is still loading; try again")
        return session

    def on_generate(self, session, images, video, prompt, model, max_new, *controls):
        try:
            session = self._session(session)
            name, scope = self.models.get(model)
            video_path = video if isinstance(video, str) or video is None else getattr(video, "name", None)
            example, frames = build_example(
                prompt, images, video_path, self.limits, scope.adapter.temporal_patch_size or 2
            )
            max_new = min(int(max_new), self.limits.max_new_tokens)
        except Exception as e:
            yield {self.status: error_line(e)}
            return
        gr = _gradio()
        yield {
            self.status: note_line(f"generating with {name}…"),
            self.answer: "",
            self.token: gr.update(choices=[], value=None),
            self.map_image: None,
            self.map_info: "",
            self.map_values: "",
            self.mask_text: None,
            self.mask_image: None,
            self.lens_html: "",
        }
        started = time.perf_counter()
        answer = None
        try:
            for item in _stream(scope, example, capture_plan(scope), max_new, session.cancel, self.models.locks[name]):
                if isinstance(item, str):
                    yield {self.answer: item}
                else:
                    answer = item
        except Exception as e:
            yield {self.status: error_line(e)}
            return
        assert answer is not None
        if not answer.ids:
            yield {self.status: note_line("stopped before the first token")}
            return
        run = Run(name, scope, example, answer, frames)
        session.new_run(run)
        ad = scope.adapter
        stopped = " (stopped)" if session.cancel.is_set() else ""
        groups = run.frame_groups()
        labels = token_labels(answer.tokens)
        out: dict[Any, Any] = {
            self.answer: answer.text,
            self.token: gr.update(choices=labels, value=labels[0]),
            self.status: note_line(
                f"{len(answer.ids)} tokens in {time.perf_counter() - started:.2f} s{stopped}; "
                f"rows of all {ad.num_layers} layers captured"
            ),
            self.frame: gr.update(maximum=max(groups - 1, 1), value=0, visible=groups > 1),
            self.layer_lo: gr.update(maximum=ad.num_layers - 1),
            self.layer_hi: gr.update(maximum=ad.num_layers - 1, value=min(int(controls[2]), ad.num_layers - 1)),
            self.head_lo: gr.update(maximum=ad.num_heads - 1),
            self.head_hi: gr.update(maximum=ad.num_heads - 1, value=min(int(controls[4]), ad.num_heads - 1)),
        }
        controls = list(controls)
        controls[2], controls[4] = min(int(controls[2]), ad.num_layers - 1), min(int(controls[4]), ad.num_heads - 1)
        controls[1], controls[3] = min(int(controls[1]), controls[2]), min(int(controls[3]), controls[4])
        out.update(self.on_map(session, 0, *controls[:-1], 0))
        yield out

    def on_stop(self, session):
        if session is not None:
            session.cancel.set()
        return note_line("stopping…")

    @_guard()
    def on_map(
        self, session, token, method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks, cmap, alpha, view, frame
    ):
        if session is None or session.run is None or token is None:
            return self._nothing()
        run = session.run
        settings = self._settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
        started = time.perf_counter()
        maps = token_maps(run, settings, lock=self.models.locks[run.model])
        image = render(maps, run, int(token), int(frame or 0), None if cmap in (None, "auto") else cmap, alpha, view)
        seconds = time.perf_counter() - started
        session.shown = image
        return {
            self.map_image: image,
            self.map_info: note_line(describe(maps, int(token), seconds)),
            self.map_values: json.dumps(map_values(maps, int(token), int(frame or 0))),
            self.status: "",
        }

    @_guard()
    def on_export(
        self, session, kind, token, method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks, cmap, alpha, view, frame
    ):
        session = self._session(session)
        run = session.need_run()
        out = session.out_dir
        stem = f"vlmscope-{run.model.replace(' ', '_')}"
        if kind == "png":
            if session.shown is None:
                raise VlmscopeError("pick a token first")
            path = out / f"{stem}-token{token}.png"
            session.shown.save(path)
        elif kind == "pdf":
            settings = self._settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
            maps = token_maps(run, settings, lock=self.models.locks[run.model])
            c = None if cmap in (None, "auto") else cmap
            pages = [
                render(maps, run, j, int(frame or 0), c, alpha, view).convert("RGB") for j in range(len(maps.tokens))
            ]
            path = out / f"{stem}-{settings.method}.pdf"
            pages[0].save(path, save_all=True, append_images=pages[1:])
        else:
            if run.example.videos:
                raise VlmscopeError("the HTML report takes images; export this video's maps as PDF")
            from ..report import run_report

            target = out / f"{stem}-report"
            with self.models.locks[run.model]:
                _, page = run_report(
                    run.scope, list(run.example.images), run.example.prompt, target, max_new_tokens=len(run.answer.ids)
                )
            path = page.with_name(f"{stem}-report.html")
            page.replace(path)
        return {self.export: str(path), self.status: note_line(f"exported {path.name}")}

    @_guard()
    def on_masking(self, session, token, cmap, alpha, run_it):
        from ..methods.masking import mask_impact
        from .maps import draw_map

        if session is None or session.run is None or token is None:
            return (
                self._nothing() if not run_it else {self.status: error_line(VlmscopeError("generate an answer first"))}
            )
        run = session.run
        if session.masking is None:
            if not run_it:
                return self._nothing()
            with self.models.locks[run.model]:
                session.masking = mask_impact(run.scope, run.answer.prompt, answer_ids=run.answer.ids, mode="both")
        result = session.masking
        j = int(token)
        drops = result.impact("drop", j)
        scale = max(float(abs(drops).max()), 1e-12)
        text = [(u.label + " ", float(d) / scale) for u, d in zip(result.units, drops) if u.kind == "text"]
        tiles = []
        n_images = len([v for v in run.answer.token_map.visuals if v.kind == "image"])
        for k in range(n_images):
            grid = result.vision_map(k, j).reshape(run.answer.token_map.visual(k).merged_thw)[0]
            tiles.append(draw_map(run.frames[k][0], grid, None if cmap in (None, "auto") else cmap, alpha))
        values = {
            "token": j,
            "text": [[u.label, float(d)] for u, d in zip(result.units, drops) if u.kind == "text"],
            "vision": [result.vision_map(k, j).tolist() for k in range(n_images)],
        }
        return {
            self.mask_text: text,
            self.mask_image: strip(tiles, gap=8) if tiles else None,
            self.mask_values: json.dumps(values),
            self.status: note_line(f"masking: {len(result.units)} units scored in {result.seconds:.2f} s"),
        }

    @_guard()
    def on_lens(self, session, kind):
        from ..methods.lens.method import LENS_METHODS

        session = self._session(session)
        run = session.need_run()
        with self.models.locks[run.model]:
            session.lens = LENS_METHODS[kind]().attribute(run.scope, run.example, run.answer)
        lens = session.lens
        gr = _gradio()
        return {
            self.lens_layer: gr.update(
                maximum=max(len(lens.layers) - 1, 1), value=0, label="Layer (index into the lens' layers)"
            ),
            self.lens_html: lens_grid_html(lens, 0),
            self.status: note_line(f"{kind} lens over {len(lens.layers)} layers"),
        }

    @_guard()
    def on_lens_layer(self, session, layer):
        if session is None or session.lens is None:
            return self._nothing()
        return {self.lens_html: lens_grid_html(session.lens, int(layer))}

    @_guard()
    def on_compare(
        self,
        session,
        images,
        video,
        prompt,
        max_new,
        same,
        method,
        l_lo,
        l_hi,
        h_lo,
        h_hi,
        head_agg,
        layer_agg,
        sinks,
        cmap,
        alpha,
    ):
        from .compare import compare, comparison_html

        session = self._session(session)
        video_path = video if isinstance(video, str) or video is None else getattr(video, "name", None)
        example, frames = build_example(prompt, images, video_path, self.limits)
        settings = self._settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
        comp = compare(
            self.models.scopes,
            example,
            frames,
            settings,
            same_answer=bool(same),
            max_new_tokens=min(int(max_new), self.limits.max_new_tokens),
            locks=self.models.locks,
        )
        session.comparison = comp
        page = comparison_html(comp, None if cmap in (None, "auto") else cmap, float(alpha), standalone=False)
        frame = (
            '<iframe title="comparison" sandbox="" style="width:100%;height:640px;border:0" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        )
        return {
            self.compare_html: frame,
            self.compare_values: json.dumps(comp.to_dict()),
            self.status: note_line(f"compared {len(comp.runs)} models; {len(comp.rows)} shared tokens"),
        }


def lens_grid_html(lens, layer_index: int) -> str:
    """The first image under its token grid, each cell showing its top word at one layer; hover a
    cell for the top-k list."""
    from ..viz.page import data_uri

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


def _stream(*args):
    from .stream import stream_answer

    return stream_answer(*args)


def _gradio():
    import gradio as gr

    return gr


CSS = """
.vs-error{color:#b00020;font-weight:600}
.vs-note{color:#555}
.vs-lens .vs-cell{border:1px solid rgba(255,255,255,.6);color:#fff;text-shadow:0 0 3px #000,0 0 2px #000;
  display:flex;align-items:center;justify-content:center;overflow:hidden;white-space:nowrap}
"""


def build(scope_or_models=None, limits: Limits | None = None) -> gr.Blocks:
    """The app's page for a Scope, a list of Scopes or {name: Scope} (None: the bundled model).
    Each call builds a new page; nothing is kept at module level."""
    if scope_or_models is None:
        from ..scope import load

        scope_or_models = load()
    return App(Models.of(scope_or_models), limits or Limits()).blocks


def launch(blocks, host: str = "127.0.0.1", port: int | None = 7860, limits: Limits | None = None, **kwargs):
    """Serve `blocks` on `host:port` (localhost unless told otherwise) with the upload limit."""
    limits = limits or Limits()
    return blocks.queue(default_concurrency_limit=4).launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_upload_bytes,
        css=CSS,
        show_error=False,
        footer_links=[],
        **kwargs,
    )
