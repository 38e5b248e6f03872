"""The Gradio page: built by `build()`, with no module-level model or state.

Upload images or a video, prompt, generate (the answer streams in; Stop cancels), pick a token and
see its map. Every layer's attention rows of the generated tokens are captured during the generate,
so changing the token, layers, heads, aggregation, colours or frame redraws the raw map without
running the model. This module lays out the page: its common part, then its tabs (`TABS`, one
module each in `app/tabs/`, with their handlers) and wires the events; `generating` handles
generate and stop.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ..limits import ANSWER_TOKENS
from .generating import Generating
from .inputs import Limits
from .session import Models, Session
from .tab import Shared, Tab
from .tabs.compare import CompareTab
from .tabs.lens import LensTab
from .tabs.maps import MapsTab
from .tabs.masking import MaskingTab

if TYPE_CHECKING:
    import gradio as gr

VIDEO_TYPES = [".gif", ".webp", ".png", ".apng", ".mp4", ".webm", ".mov"]
# the page's tabs, in order (a tab's `wanted` may leave it out for the models served)
TABS: tuple[type[Tab], ...] = (MapsTab, MaskingTab, LensTab, CompareTab)


class App:
    """The page's common components and its tabs, laid out and wired; `blocks` is the gr.Blocks."""

    def __init__(self, models: Models, limits: Limits):
        import gradio as gr

        self.models, self.limits = models, limits
        with gr.Blocks(title="vlmscope") as self.blocks:
            session = gr.State(None)
            gr.Markdown(f"## vlmscope · {html.escape(', '.join(models.names))}")
            with gr.Row():
                with gr.Column(scale=1, min_width=300):
                    images = gr.File(
                        label="Images", file_count="multiple", file_types=["image"], elem_id="vs-images", height=120
                    )
                    video = gr.File(
                        label="Video (animated GIF/WebP/PNG; MP4 with PyAV)",
                        file_types=VIDEO_TYPES,
                        elem_id="vs-video",
                        height=90,
                    )
                    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="vs-prompt")
                    model = gr.Dropdown(
                        models.names, value=models.names[0], label="Model", visible=len(models.names) > 1
                    )
                    max_new = gr.Slider(
                        1,
                        limits.max_new_tokens,
                        value=min(ANSWER_TOKENS, limits.max_new_tokens),
                        step=1,
                        label="Max new tokens",
                    )
                    with gr.Row():
                        self.generate_btn = gr.Button("Generate", variant="primary", elem_id="vs-generate")
                        self.stop_btn = gr.Button("Stop", elem_id="vs-stop")
                    status = gr.HTML(elem_id="vs-status")
                with gr.Column(scale=2):
                    answer = gr.Textbox(label="Answer", interactive=False, elem_id="vs-answer")
                    token = gr.Radio([], type="index", label="Generated tokens (click one)", elem_id="vs-tokens")
                    self.shared = Shared(
                        models, limits, session, images, video, prompt, model, max_new, status, answer, token
                    )
                    self.tabs = [cls(self.shared) for cls in TABS if cls.wanted(models)]
                    with gr.Tabs():
                        for tab in self.tabs:
                            with gr.Tab(tab.title, id=tab.id):
                                tab.layout(gr)
                            self.shared.tabs[tab.id] = tab
            self._wire(gr)

    def _wire(self, gr) -> None:
        s, limits = self.shared, self.limits
        self.blocks.load(lambda: Session(limits=limits), outputs=s.session)
        handlers = Generating(s, self.tabs)
        tab_inputs = [c for tab in self.tabs for c in tab.generate_inputs()]
        outputs = [s.answer, s.token, s.status, *(c for tab in self.tabs for c in tab.generate_outputs())]
        gen = self.generate_btn.click(
            handlers.on_generate,
            [s.session, s.images, s.video, s.prompt, s.model, s.max_new, *tab_inputs],
            outputs,
            concurrency_limit=None,
        )
        self.stop_btn.click(handlers.on_stop, [s.session], [s.status], cancels=[gen], concurrency_limit=None)
        for tab in self.tabs:
            tab.wire(gr)


# the page's own rules, then each tab's
CSS = """
.vs-error{color:#b00020;font-weight:600}
.vs-note{color:#555}
""" + "".join(tab.css for tab in TABS)


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
