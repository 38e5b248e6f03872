"""The Compare tab (two or more models): the same images and prompt on every model, answers side
by side and one row of maps per shared token, with the Maps tab's method, ranges and colours."""

from __future__ import annotations

import html
import json

from ..inputs import build_example
from ..session import Models
from ..tab import Tab, guard, need_session, note_line
from .maps import colormap, map_settings, maps_tab


class CompareTab(Tab):
    title, id = "Compare", "compare"

    @classmethod
    def wanted(cls, models: Models) -> bool:
        return len(models.names) > 1

    def layout(self, gr) -> None:
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

    def wire(self, gr) -> None:
        shared, maps = self.shared, maps_tab(self.shared)
        self.compare_btn.click(
            self.on_compare,
            [
                shared.session,
                shared.images,
                shared.video,
                shared.prompt,
                shared.max_new,
                self.same_answer,
                *maps.settings,
                maps.cmap,
                maps.alpha,
            ],
            [self.compare_html, self.compare_values, self.status],
        )

    @guard
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
        from ..compare import compare, comparison_html

        session = need_session(session)
        limits, models = self.shared.limits, self.shared.models
        video_path = video if isinstance(video, str) or video is None else getattr(video, "name", None)
        example, frames = build_example(prompt, images, video_path, limits)
        settings = map_settings(method, l_lo, l_hi, h_lo, h_hi, head_agg, layer_agg, sinks)
        comp = compare(
            models.scopes,
            example,
            frames,
            settings,
            same_answer=bool(same),
            max_new_tokens=min(int(max_new), limits.max_new_tokens),
            locks=models.locks,
        )
        session.comparison = comp
        page = comparison_html(comp, colormap(cmap), float(alpha), standalone=False)
        frame = (
            '<iframe title="comparison" sandbox="" style="width:100%;height:640px;border:0" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>'
        )
        return {
            self.compare_html: frame,
            self.compare_values: json.dumps(comp.to_dict()),
            self.status: note_line(f"compared {len(comp.runs)} models; {len(comp.rows)} shared tokens"),
        }
